//! Hostile input must not make the decoder allocate much more than the frame it arrived in.
//!
//! This binary counts every allocation with a global allocator and measures the peak of live
//! heap bytes during each decode. It holds a single test, so nothing else allocates while a
//! measurement runs.

mod common;

use bytes::{BufMut, BytesMut};
use flotilla_raft::membership::{Membership, NodeAddr};
use flotilla_raft::message::{Message, MessageBody};
use flotilla_raft::types::{Entry, EntryPayload, LogIndex, NodeId, Term};
use flotilla_wire::handshake::{HandshakeConfig, server_handshake};
use flotilla_wire::{
    HandshakeError, LEN_PREFIX_BYTES, WIRE_VERSION, WireCodec, WireError, WireMessage,
    decode_frame, encode_frame,
};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::Decoder;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
            PEAK.fetch_max(live, Ordering::SeqCst);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap growth, in bytes, while `f` runs.
fn peak_growth<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let r = f();
    (r, PEAK.load(Ordering::SeqCst).saturating_sub(base))
}

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// serde pre-sizes a Vec from a sequence's claimed length, but caps that at 1 MiB
/// (`serde::de::size_hint::cautious`); everything else the decoder allocates is bounded by
/// the bytes actually present in the frame.
const SERDE_PREALLOC_CAP: usize = MIB;

fn frame_of(body: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(LEN_PREFIX_BYTES + 1 + body.len());
    f.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
    f.push(WIRE_VERSION);
    f.extend_from_slice(body);
    f
}

/// Replaces the first occurrence of `from` in a frame's body by `to`.
fn patch(frame: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let body = &frame[LEN_PREFIX_BYTES + 1..];
    let at = body.windows(from.len()).position(|w| w == from).expect("pattern present");
    let mut patched = body[..at].to_vec();
    patched.extend_from_slice(to);
    patched.extend_from_slice(&body[at + from.len()..]);
    frame_of(&patched)
}

fn append_entries(entries: Vec<Entry>) -> WireMessage {
    WireMessage::Raft(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: MessageBody::AppendEntries {
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries,
            leader_commit: LogIndex(0x77),
            read_seq: 0x66,
        },
    })
}

#[test]
fn hostile_frames_allocate_no_more_than_the_frame_plus_a_bounded_preallocation() {
    // 1. A length header of 4 GiB: refused before anything is reserved.
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    let (r, grew) = peak_growth(|| WireCodec::new().decode(&mut buf));
    assert!(matches!(r, Err(WireError::FrameTooLarge { .. })), "{r:?}");
    assert!(grew < 4 * KIB, "grew {grew} bytes");

    // 2. An entries array that claims u32::MAX elements in a 40-byte frame.
    let honest = encode_frame(&append_entries(vec![])).expect("encodes");
    // Empty entries (0x90) followed by leader_commit 0x77 and read_seq 0x66.
    let hostile = patch(&honest, &[0x90, 0x77, 0x66], &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x77]);
    let (r, grew) = peak_growth(|| decode_frame(&hostile));
    assert!(r.is_err());
    assert!(grew <= SERDE_PREALLOC_CAP + 4 * KIB, "grew {grew} bytes");

    // 3. A command payload (msgpack bin) that claims 4 GiB.
    let entry = Entry {
        term: Term(1),
        index: LogIndex(1),
        payload: EntryPayload::Command(vec![0xab].into()),
    };
    let honest = encode_frame(&append_entries(vec![entry])).expect("encodes");
    let hostile = patch(&honest, &[0xc4, 0x01, 0xab], &[0xc6, 0xff, 0xff, 0xff, 0xff, 0xab]);
    let (r, grew) = peak_growth(|| decode_frame(&hostile));
    assert!(r.is_err());
    assert!(grew < 4 * KIB, "grew {grew} bytes");

    // 4. A string (an address in a configuration entry) that claims 4 GiB.
    let mut membership = Membership::with_voters([NodeId(1)]);
    membership.addrs.insert(NodeId(1), NodeAddr { raft_addr: "zz".into(), api_addr: "".into() });
    let entry =
        Entry { term: Term(1), index: LogIndex(1), payload: EntryPayload::Config(membership) };
    let honest = encode_frame(&append_entries(vec![entry])).expect("encodes");
    let hostile = patch(&honest, &[0xa2, b'z', b'z'], &[0xdb, 0xff, 0xff, 0xff, 0xff, b'z', b'z']);
    let (r, grew) = peak_growth(|| decode_frame(&hostile));
    assert!(r.is_err());
    assert!(grew < 4 * KIB, "grew {grew} bytes");

    // 5. Pseudo-random garbage bodies behind a valid header (xorshift: deterministic).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for round in 0..2000 {
        let len = 1 + (round * 7) % 3000;
        let body: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let frame = frame_of(&body);
        let (_, grew) = peak_growth(|| decode_frame(&frame));
        assert!(grew <= 2 * frame.len() + SERDE_PREALLOC_CAP + 4 * KIB, "round {round}: {grew}");
    }

    // 6. A handshake listener reads at most a handshake-sized frame from an unproven peer.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let (r, grew) = peak_growth(|| {
        runtime.block_on(async {
            let (mut peer, mut ours) = tokio::io::duplex(64);
            peer.write_all(&(1u32 << 30).to_be_bytes()).await.expect("writes");
            let config = HandshakeConfig::new("c", NodeId(2));
            server_handshake(&mut ours, &config).await
        })
    });
    assert!(
        matches!(r, Err(HandshakeError::Wire(WireError::FrameTooLarge { len, max: 4096 })) if len == 1 << 30),
        "{r:?}"
    );
    assert!(grew < 64 * KIB, "grew {grew} bytes");
}
