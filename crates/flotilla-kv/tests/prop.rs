//! Property tests: whatever a client or a peer sends, nothing panics, and what is accepted
//! round-trips.

mod common;

use actix_web::body::MessageBody;
use actix_web::test::{self, TestRequest};
use common::{FakeNode, app};
use flotilla_kv::http::{decode_key, encode_key};
use flotilla_kv::{KvStateMachine, MAX_KEY_BYTES};
use flotilla_node::StateMachine;
use flotilla_raft::{LogIndex, SnapshotMeta};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Every byte as `%XX`: always a valid URI, whatever the bytes are.
fn percent_all(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

proptest! {
    #[test]
    fn decode_key_never_panics(raw in ".{0,64}") {
        let _ = decode_key(&raw);
    }

    #[test]
    fn encoded_keys_decode_to_themselves(key in "\\PC{1,200}") {
        prop_assume!(key.len() <= MAX_KEY_BYTES);
        prop_assert_eq!(decode_key(&encode_key(&key)), Ok(key));
    }
}

#[test]
fn arbitrary_keys_and_bodies_over_http_never_panic_and_round_trip() {
    let node = FakeNode::new();
    let strategy = (
        proptest::collection::vec(any::<u8>(), 0..1100),
        proptest::collection::vec(any::<u8>(), 0..300),
    );
    let mut runner = TestRunner::new(Config { cases: 128, ..Config::default() });
    runner
        .run(&strategy, |(key, body)| {
            actix_web::rt::System::new().block_on(async {
                let service = test::init_service(app(&node)).await;
                let path = format!("/v1/kv/{}", percent_all(&key));
                let put = TestRequest::put().uri(&path).set_payload(body.clone()).to_request();
                let status = test::call_service(&service, put).await.status().as_u16();
                let valid = !key.is_empty()
                    && key.len() <= MAX_KEY_BYTES
                    && std::str::from_utf8(&key).is_ok();
                let expected = if key.is_empty() {
                    400
                } else if key.len() > MAX_KEY_BYTES {
                    414
                } else if valid {
                    200
                } else {
                    400
                };
                prop_assert_eq!(status, expected, "key {:?}", key);
                if valid {
                    let get = TestRequest::get().uri(&path).to_request();
                    let resp = test::call_service(&service, get).await;
                    prop_assert_eq!(resp.status().as_u16(), 200);
                    let got = resp.into_body().try_into_bytes().unwrap_or_default();
                    prop_assert_eq!(&got[..], &body[..]);
                }
                // The same bytes as a CAS body: JSON or not, never a panic, never a 5xx.
                let cas = TestRequest::post()
                    .uri(&format!("{path}/cas"))
                    .set_payload(body.clone())
                    .to_request();
                let status = test::call_service(&service, cas).await.status().as_u16();
                prop_assert!(status < 500, "cas answered {}", status);
                Ok(())
            })
        })
        .unwrap();
}

#[test]
fn arbitrary_snapshot_streams_are_refused_without_harm() {
    let dir = tempfile::tempdir().unwrap();
    let sm = KvStateMachine::open(fjall::Database::builder(dir.path()).open().unwrap()).unwrap();
    let reader = sm.reader();
    let sm = std::cell::RefCell::new(sm);
    let mut runner = TestRunner::new(Config { cases: 16, ..Config::default() });
    let strategy = proptest::collection::vec(any::<u8>(), 0..2000);
    runner
        .run(&strategy, |bytes| {
            // Half the cases start with a valid header so the parser gets past it.
            let mut stream = b"FLOTKVS\0\x01".to_vec();
            stream.extend_from_slice(&[0u8; 16]);
            stream.extend_from_slice(&bytes);
            for candidate in [&bytes[..], &stream[..]] {
                let meta = SnapshotMeta { last_index: LogIndex(0), ..Default::default() };
                prop_assert!(sm.borrow_mut().restore(&meta, &mut &candidate[..]).is_err());
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(sm.borrow().applied_index(), LogIndex(0));
    assert_eq!(reader.get(b"anything").unwrap(), None);
}
