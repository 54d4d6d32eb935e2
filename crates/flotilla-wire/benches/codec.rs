//! Encode and decode of a typical replication frame: AppendEntries with 64 entries of 128 B.
//! Run with `cargo bench -p flotilla-wire`.

#[path = "../tests/common/mod.rs"]
mod common;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, black_box, criterion_group, criterion_main};
use flotilla_wire::WireCodec;
use tokio_util::codec::{Decoder, Encoder};

fn append_entries_64x128(c: &mut Criterion) {
    let msg = common::append_entries(64, 128);
    let mut frame = BytesMut::new();
    WireCodec::new().encode(&msg, &mut frame).expect("encodes");

    let mut group = c.benchmark_group("append_entries_64x128B");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function("encode", |b| {
        let mut buf = BytesMut::with_capacity(frame.len());
        b.iter(|| {
            buf.clear();
            WireCodec::new().encode(black_box(&msg), &mut buf).expect("encodes");
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| {
            let mut buf = frame.clone();
            WireCodec::new().decode(black_box(&mut buf)).expect("decodes").expect("a frame")
        })
    });
    group.finish();
}

criterion_group!(benches, append_entries_64x128);
criterion_main!(benches);
