//! HTTP request parsing: the HTTP/1 codec every node's API runs (actix-http), over
//! arbitrary bytes, and the KV key decoder over arbitrary path segments. Nothing may panic;
//! a key that decodes must re-encode to a segment that decodes to the same key.
#![no_main]

use actix_http::ServiceConfig;
use actix_http::h1::Codec;
use bytes::BytesMut;
use flotilla_kv::http::{decode_key, encode_key};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

/// actix-http's configuration starts its date service on the current tokio LocalSet (a
/// node always builds it inside its actix runtime), so it is built once inside one, and
/// the runtime is kept alongside (reachable, so the leak checker does not flag it).
struct Http {
    config: ServiceConfig,
    _local: tokio::task::LocalSet,
    _rt: tokio::runtime::Runtime,
}

thread_local! {
    static HTTP: Http = {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        let config = local.block_on(&rt, async { ServiceConfig::default() });
        Http { config, _local: local, _rt: rt }
    };
}

fuzz_target!(|data: &[u8]| {
    let segment = String::from_utf8_lossy(data);
    if let Ok(key) = decode_key(&segment) {
        assert_eq!(decode_key(&encode_key(&key)).as_ref(), Ok(&key));
    }
    let mut codec = HTTP.with(|h| Codec::new(h.config.clone()));
    let mut buf = BytesMut::from(data);
    for _ in 0..64 {
        match codec.decode(&mut buf) {
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => break,
        }
    }
});
