//! Shows the fjall 3.1 behaviour that `KvReader::read` avoids and `KvStateMachine::snapshot`
//! steps around (docs/kv.md, "Local reads"): a point-in-time view opened while a batch is
//! being committed can see that batch appear between two of its reads, when a flush
//! installs a new table version meanwhile.
//!
//! One thread commits 3,000 batches, each writing its number into `data/x` (plus 100 filler
//! keys, so memtables fill and flush) and into `meta/applied`. Two threads open views and
//! read `meta`, then `data`, then `meta` again; a view is torn when the three differ.
//!
//! `cargo run --release -p flotilla-kv --example fjall_view_probe -- [MEMTABLE_BYTES] [HOLD_MICROS]`
//! (defaults 1 MiB and 0; a memtable of 64 MiB never flushes here and shows no torn view).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fjall::{Database, KeyspaceCreateOptions, Readable};

fn number(v: Option<fjall::Slice>) -> u64 {
    v.map_or(0, |b| u64::from_be_bytes(b.as_ref().try_into().expect("8 bytes")))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<u64>());
    let memtable = args.next().transpose()?.unwrap_or(1 << 20);
    let hold = Duration::from_micros(args.next().transpose()?.unwrap_or(0));
    let dir = tempfile::tempdir()?;
    let db = Database::builder(dir.path()).open()?;
    let data =
        db.keyspace("data", move || KeyspaceCreateOptions::default().max_memtable_size(memtable))?;
    let meta = db.keyspace("meta", KeyspaceCreateOptions::default)?;
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, data, meta, done) = (db.clone(), data.clone(), meta.clone(), done.clone());
            std::thread::spawn(move || -> fjall::Result<(u64, u64)> {
                let (mut views, mut torn) = (0, 0);
                while !done.load(Ordering::Relaxed) {
                    let view = db.snapshot();
                    let first = number(view.get(&meta, b"applied")?);
                    std::thread::sleep(hold);
                    let x = number(view.get(&data, b"x")?);
                    let again = number(view.get(&meta, b"applied")?);
                    if first != x || x != again {
                        if torn < 3 {
                            println!("torn view: meta {first}, then data {x}, then meta {again}");
                        }
                        torn += 1;
                    }
                    views += 1;
                }
                Ok((views, torn))
            })
        })
        .collect();
    for n in 1..=3000u64 {
        let mut batch = db.batch();
        for k in 0..100 {
            batch.insert(&data, format!("filler/{k}"), n.to_be_bytes());
        }
        batch.insert(&data, "x", n.to_be_bytes());
        batch.insert(&meta, "applied", n.to_be_bytes());
        batch.commit()?;
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        let (views, torn) = r.join().expect("reader")?;
        println!("{views} views, {torn} torn");
    }
    Ok(())
}
