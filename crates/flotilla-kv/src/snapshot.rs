//! The snapshot stream format, and the state machine's [`SnapshotSource`].
//!
//! ```text
//! magic    8 bytes  "FLOTKVS\0"
//! version  u8       1
//! applied  u64 BE   the index the snapshot reflects
//! clock_ms u64 BE   the state machine clock (largest command ts_ms seen)
//! records, any number:
//!   0x01 key_len u32 BE, key (UTF-8, 1..=1024 bytes), value_len u32 BE, value (<= 1 MiB)
//!   0x02 client u64 BE, last_seq u64 BE, touched_index u64 BE, touched_ms u64 BE,
//!        response_len u32 BE, response (an encoded KvResponse)
//! end:
//!   0xFF kv_count u64 BE, session_count u64 BE, crc32c u32 BE of every byte before it
//! ```
//! Integers are big-endian. Nothing may follow the end record. A reader checks every length
//! against its limit before allocating, so a hostile stream cannot make it allocate more
//! than one value's worth.

use std::io::{self, Read, Write};

use bytes::Bytes;
use fjall::{Keyspace, Readable, Snapshot};
use flotilla_node::{SmError, SnapshotSource};
use flotilla_raft::LogIndex;

use crate::sessions::SessionRecord;
use crate::{KvError, MAX_KEY_BYTES, MAX_VALUE_BYTES};

pub const SNAPSHOT_MAGIC: [u8; 8] = *b"FLOTKVS\0";
pub const SNAPSHOT_VERSION: u8 = 1;
const TAG_KV: u8 = 0x01;
const TAG_SESSION: u8 = 0x02;
const TAG_END: u8 = 0xFF;
/// An encoded response holds at most one value plus a small header.
const MAX_RESPONSE_BYTES: usize = MAX_VALUE_BYTES + 4096;

/// A `Write` that keeps a running CRC32C of what went through.
struct CrcWriter<W> {
    inner: W,
    crc: u32,
}

impl<W: Write> CrcWriter<W> {
    fn put(&mut self, buf: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.inner.write_all(buf)
    }
}

/// Writes a snapshot stream record by record.
pub(crate) struct SnapshotWriter<W> {
    out: CrcWriter<W>,
    kv_count: u64,
    session_count: u64,
}

impl<W: Write> SnapshotWriter<W> {
    pub(crate) fn new(inner: W, applied: LogIndex, clock_ms: u64) -> io::Result<Self> {
        let mut out = CrcWriter { inner, crc: 0 };
        out.put(&SNAPSHOT_MAGIC)?;
        out.put(&[SNAPSHOT_VERSION])?;
        out.put(&applied.0.to_be_bytes())?;
        out.put(&clock_ms.to_be_bytes())?;
        Ok(SnapshotWriter { out, kv_count: 0, session_count: 0 })
    }

    pub(crate) fn put_kv(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.out.put(&[TAG_KV])?;
        self.out.put(&len_u32(key.len())?.to_be_bytes())?;
        self.out.put(key)?;
        self.out.put(&len_u32(value.len())?.to_be_bytes())?;
        self.out.put(value)?;
        self.kv_count += 1;
        Ok(())
    }

    pub(crate) fn put_session(&mut self, client: u64, r: &SessionRecord) -> io::Result<()> {
        self.out.put(&[TAG_SESSION])?;
        for n in [client, r.last_seq, r.touched_index, r.touched_ms] {
            self.out.put(&n.to_be_bytes())?;
        }
        self.out.put(&len_u32(r.response.len())?.to_be_bytes())?;
        self.out.put(&r.response)?;
        self.session_count += 1;
        Ok(())
    }

    pub(crate) fn finish(mut self) -> io::Result<W> {
        self.out.put(&[TAG_END])?;
        self.out.put(&self.kv_count.to_be_bytes())?;
        self.out.put(&self.session_count.to_be_bytes())?;
        let crc = self.out.crc;
        self.out.inner.write_all(&crc.to_be_bytes())?;
        self.out.inner.flush()?;
        Ok(self.out.inner)
    }
}

fn len_u32(n: usize) -> io::Result<u32> {
    u32::try_from(n).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "record over 4 GiB"))
}

/// The applied index a snapshot stream describes, from its header alone (magic and
/// version checked; the records are checked by `restore`). For `flotilla restore`, which
/// must know the index before it restores.
pub fn snapshot_stream_index(inner: impl Read) -> Result<LogIndex, KvError> {
    Ok(SnapshotReader::new(inner)?.applied)
}

/// One record of a snapshot stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SnapshotRecord {
    Kv { key: Vec<u8>, value: Vec<u8> },
    Session { client: u64, record: SessionRecord },
}

/// Reads and checks a snapshot stream record by record.
pub(crate) struct SnapshotReader<R> {
    inner: R,
    crc: u32,
    pub(crate) applied: LogIndex,
    pub(crate) clock_ms: u64,
    kv_count: u64,
    session_count: u64,
    finished: bool,
}

impl<R: Read> SnapshotReader<R> {
    pub(crate) fn new(inner: R) -> Result<Self, KvError> {
        let mut r = SnapshotReader {
            inner,
            crc: 0,
            applied: LogIndex::ZERO,
            clock_ms: 0,
            kv_count: 0,
            session_count: 0,
            finished: false,
        };
        let magic: [u8; 8] = r.array()?;
        if magic != SNAPSHOT_MAGIC {
            return Err(KvError::malformed("snapshot", "bad magic"));
        }
        let [version] = r.array()?;
        if version != SNAPSHOT_VERSION {
            return Err(KvError::malformed("snapshot", format!("unknown version {version}")));
        }
        r.applied = LogIndex(r.u64()?);
        r.clock_ms = r.u64()?;
        Ok(r)
    }

    /// The next record, or `None` after a valid end record (checksum and counts checked).
    pub(crate) fn next_record(&mut self) -> Result<Option<SnapshotRecord>, KvError> {
        if self.finished {
            return Ok(None);
        }
        let [tag] = self.array()?;
        match tag {
            TAG_KV => {
                let key = self.bytes(MAX_KEY_BYTES, "key")?;
                if key.is_empty() || std::str::from_utf8(&key).is_err() {
                    return Err(KvError::malformed("snapshot", "key empty or not UTF-8"));
                }
                let value = self.bytes(MAX_VALUE_BYTES, "value")?;
                self.kv_count += 1;
                Ok(Some(SnapshotRecord::Kv { key, value }))
            }
            TAG_SESSION => {
                let client = self.u64()?;
                let last_seq = self.u64()?;
                let touched_index = self.u64()?;
                let touched_ms = self.u64()?;
                let response = Bytes::from(self.bytes(MAX_RESPONSE_BYTES, "response")?);
                self.session_count += 1;
                let record = SessionRecord { last_seq, touched_index, touched_ms, response };
                Ok(Some(SnapshotRecord::Session { client, record }))
            }
            TAG_END => {
                let kv_count = self.u64()?;
                let session_count = self.u64()?;
                let expected_crc = self.crc;
                let mut crc = [0u8; 4];
                read_exact(&mut self.inner, &mut crc)?;
                if u32::from_be_bytes(crc) != expected_crc {
                    return Err(KvError::malformed("snapshot", "checksum mismatch"));
                }
                if (kv_count, session_count) != (self.kv_count, self.session_count) {
                    return Err(KvError::malformed("snapshot", "record counts differ"));
                }
                let mut probe = [0u8; 1];
                if self.inner.read(&mut probe)? != 0 {
                    return Err(KvError::malformed("snapshot", "bytes after the end record"));
                }
                self.finished = true;
                Ok(None)
            }
            other => Err(KvError::malformed("snapshot", format!("unknown record tag {other:#x}"))),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], KvError> {
        let mut buf = [0u8; N];
        read_exact(&mut self.inner, &mut buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf);
        Ok(buf)
    }

    fn u64(&mut self) -> Result<u64, KvError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self, max: usize, what: &str) -> Result<Vec<u8>, KvError> {
        let len = u32::from_be_bytes(self.array()?) as usize;
        if len > max {
            return Err(KvError::malformed(
                "snapshot",
                format!("{what} of {len} bytes over {max}"),
            ));
        }
        let mut buf = vec![0u8; len];
        read_exact(&mut self.inner, &mut buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf);
        Ok(buf)
    }
}

fn read_exact(r: &mut impl Read, buf: &mut [u8]) -> Result<(), KvError> {
    r.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => KvError::malformed("snapshot", "truncated"),
        _ => KvError::Io(e),
    })
}

/// A frozen view of the state machine: a fjall snapshot (copy-on-write, so `apply` goes on
/// meanwhile) plus the keyspaces of the generation it was taken from.
pub struct KvSnapshot {
    pub(crate) view: Snapshot,
    pub(crate) data: Keyspace,
    pub(crate) sessions: Keyspace,
    pub(crate) index: LogIndex,
    pub(crate) clock_ms: u64,
}

impl KvSnapshot {
    fn write(&self, out: &mut dyn Write) -> Result<(), KvError> {
        let mut w = SnapshotWriter::new(io::BufWriter::new(out), self.index, self.clock_ms)?;
        for guard in self.view.iter(&self.data) {
            let (key, value) = guard.into_inner()?;
            w.put_kv(&key, &value)?;
        }
        for guard in self.view.iter(&self.sessions) {
            let (key, value) = guard.into_inner()?;
            let client = crate::machine::decode_client_key(&key)?;
            let record = crate::machine::decode_session(&value)?;
            w.put_session(client, &record)?;
        }
        w.finish()?;
        Ok(())
    }
}

impl SnapshotSource for KvSnapshot {
    fn index(&self) -> LogIndex {
        self.index
    }

    fn write_to(&mut self, out: &mut dyn Write) -> Result<(), SmError> {
        Ok(self.write(out)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), LogIndex(42), 9).unwrap();
        w.put_kv(b"a", b"1").unwrap();
        w.put_kv(b"b", &[0, 255]).unwrap();
        let record = SessionRecord {
            last_seq: 3,
            touched_index: 40,
            touched_ms: 8,
            response: Bytes::from_static(b"r"),
        };
        w.put_session(77, &record).unwrap();
        w.finish().unwrap()
    }

    fn read_all(buf: &[u8]) -> Result<Vec<SnapshotRecord>, KvError> {
        let mut r = SnapshotReader::new(buf)?;
        let mut out = Vec::new();
        while let Some(rec) = r.next_record()? {
            out.push(rec);
        }
        Ok(out)
    }

    #[test]
    fn stream_round_trips() {
        let buf = sample();
        let r = SnapshotReader::new(&buf[..]).unwrap();
        assert_eq!((r.applied, r.clock_ms), (LogIndex(42), 9));
        let recs = read_all(&buf).unwrap();
        assert_eq!(recs.len(), 3);
        assert_eq!(recs[1], SnapshotRecord::Kv { key: b"b".to_vec(), value: vec![0, 255] });
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let buf = sample();
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(read_all(&bad).is_err(), "flip at byte #{i} accepted");
            assert!(read_all(&buf[..i]).is_err(), "truncation to {i} bytes accepted");
        }
        let mut trailing = buf.clone();
        trailing.push(0);
        assert!(read_all(&trailing).is_err());
    }

    #[test]
    fn oversized_lengths_are_refused_before_allocating() {
        let mut w = SnapshotWriter::new(Vec::new(), LogIndex(1), 0).unwrap();
        w.put_kv(&[b'k'; MAX_KEY_BYTES + 1], b"").unwrap();
        let buf = w.finish().unwrap();
        assert!(matches!(read_all(&buf), Err(KvError::Malformed { .. })));
    }
}
