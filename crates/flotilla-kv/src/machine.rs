//! [`KvStateMachine`]: the replicated key-value state on fjall, and [`KvReader`] for local
//! reads.
//!
//! # Layout in the shared fjall database
//! - `kv_meta`: `format` (u64 BE, 1), `generation` (u64 BE), `applied_index` (u64 BE),
//!   `clock_ms` (u64 BE). Missing keys read as 0 (a fresh store).
//! - `kv_data_{generation}`: key (UTF-8 bytes) → value bytes.
//! - `kv_sessions_{generation}`: client id (u64 BE) → session record (version byte + rmp).
//!
//! Data and sessions live in per-generation keyspaces so that `restore` can build the new
//! state beside the old one and switch with one durable write of `generation` (see
//! [`KvStateMachine::restore`]). Any `kv_data_*`/`kv_sessions_*` keyspace of another
//! generation found at open is a leftover of an interrupted restore and is deleted.

use std::collections::HashMap;
use std::io::{BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use flotilla_node::{SmError, SnapshotSource, StateMachine};
use flotilla_raft::{Entry, EntryPayload, LogIndex, SnapshotMeta};

use crate::KvError;
use crate::command::{KvCommand, KvOp, KvResponse};
use crate::sessions::{SessionCheck, SessionLimits, SessionRecord, SessionTable};
use crate::snapshot::{KvSnapshot, SnapshotReader, SnapshotRecord};

pub const META_KEYSPACE: &str = "kv_meta";
const DATA_PREFIX: &str = "kv_data_";
const SESSIONS_PREFIX: &str = "kv_sessions_";
const META_FORMAT: &[u8] = b"format";
const META_GENERATION: &[u8] = b"generation";
const META_APPLIED: &[u8] = b"applied_index";
const META_CLOCK: &[u8] = b"clock_ms";
const FORMAT_VERSION: u64 = 1;
const SESSION_RECORD_VERSION: u8 = 1;
/// Restore writes the new generation in batches of about this many bytes (unsynced; the
/// final flip is synced and the journal is sequential, so it makes them durable too).
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// One generation's keyspaces.
#[derive(Clone)]
struct Generation {
    data: Keyspace,
    sessions: Keyspace,
}

/// What readers share with the state machine.
struct Shared {
    /// Swapped by `restore` while it holds the write lock across the flip commit, so a
    /// reader never pairs the new `applied_index` with the old data or the reverse.
    current: RwLock<Generation>,
    applied: AtomicU64,
}

/// The KV state machine. See the crate docs for how to drive it.
pub struct KvStateMachine {
    db: Database,
    meta: Keyspace,
    /// The generation `apply` writes to. Same as `shared.current` except inside `restore`.
    generation: Generation,
    shared: Arc<Shared>,
    /// Invariant: equals `applied_index` in `kv_meta` as of the last committed batch.
    applied: LogIndex,
    /// The largest `ts_ms` of any applied command: the deterministic clock of sessions.
    clock_ms: u64,
    sessions: SessionTable,
    next_generation: u64,
    /// Set when a write failed half-way: the in-memory session table may then be ahead of
    /// disk, so nothing more may be applied.
    poisoned: bool,
    #[cfg(test)]
    crash_before_flip: bool,
}

impl KvStateMachine {
    /// Opens (or creates) the state machine in `db` with the default session limits.
    pub fn open(db: Database) -> Result<KvStateMachine, KvError> {
        KvStateMachine::open_with_limits(db, SessionLimits::default())
    }

    /// Opens with explicit session limits. Every replica of a cluster must use the same
    /// limits (they decide which retries are recognised); this exists for tests.
    pub fn open_with_limits(
        db: Database,
        limits: SessionLimits,
    ) -> Result<KvStateMachine, KvError> {
        let meta = db.keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)?;
        match read_u64(&meta, META_FORMAT)? {
            None => meta.insert(META_FORMAT, FORMAT_VERSION.to_be_bytes())?,
            Some(FORMAT_VERSION) => {}
            Some(v) => {
                return Err(KvError::Corrupt(format!(
                    "kv format {v}, this build reads {FORMAT_VERSION}"
                )));
            }
        }
        let id = read_u64(&meta, META_GENERATION)?.unwrap_or(0);
        let applied = LogIndex(read_u64(&meta, META_APPLIED)?.unwrap_or(0));
        let clock_ms = read_u64(&meta, META_CLOCK)?.unwrap_or(0);
        let highest = drop_other_generations(&db, id)?;
        let generation = open_generation(&db, id)?;
        let mut sessions = SessionTable::new(limits);
        for guard in generation.sessions.iter() {
            let (key, value) = guard.into_inner()?;
            sessions
                .load(decode_client_key(&key)?, decode_session(&value)?)
                .map_err(KvError::Corrupt)?;
        }
        let shared = Arc::new(Shared {
            current: RwLock::new(generation.clone()),
            applied: AtomicU64::new(applied.0),
        });
        Ok(KvStateMachine {
            db,
            meta,
            generation,
            shared,
            applied,
            clock_ms,
            sessions,
            next_generation: highest.max(id) + 1,
            poisoned: false,
            #[cfg(test)]
            crash_before_flip: false,
        })
    }

    /// A cheap handle for local reads; it follows `restore`.
    pub fn reader(&self) -> KvReader {
        KvReader { shared: self.shared.clone() }
    }

    /// Makes every applied batch durable. `apply` commits without fsync (the log already
    /// holds the committed entries durably, and `applied_index` is in the same atomic batch
    /// as the effects, so a crash only rewinds to a consistent earlier index). The node must
    /// call this before it purges the log prefix a snapshot covers.
    pub fn sync(&self) -> Result<(), KvError> {
        Ok(self.db.persist(PersistMode::SyncData)?)
    }

    /// The state machine clock: the largest `ts_ms` of any applied command.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// How many client sessions are remembered.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The session of `client`, if remembered: `(last_seq, touched_index)`.
    pub fn session(&self, client: u64) -> Option<(u64, LogIndex)> {
        self.sessions.get(client).map(|r| (r.last_seq, LogIndex(r.touched_index)))
    }

    /// The session limits in force.
    pub fn session_limits(&self) -> SessionLimits {
        self.sessions.limits()
    }

    fn apply_entries(&mut self, entries: &[Entry]) -> Result<Vec<Option<Bytes>>, KvError> {
        if self.poisoned {
            return Err(KvError::Poisoned);
        }
        // Check the order before touching anything, so a bad call leaves no trace.
        let mut expect = self.applied;
        for e in entries.iter().filter(|e| e.index > self.applied) {
            if e.index != expect.next() {
                return Err(KvError::Corrupt(format!(
                    "apply got index {} after {}: entries must be contiguous",
                    e.index, expect
                )));
            }
            expect = e.index;
        }
        let mut overlay = HashMap::new();
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let answer = match &e.payload {
                _ if e.index <= self.applied => None,
                EntryPayload::Command(bytes) => Some(self.apply_command(e, bytes, &mut overlay)?),
                EntryPayload::Noop | EntryPayload::Config(_) => None,
            };
            out.push(answer);
        }
        if expect > self.applied {
            self.commit(expect, overlay).inspect_err(|_| self.poisoned = true)?;
        }
        Ok(out)
    }

    fn commit(
        &mut self,
        applied: LogIndex,
        overlay: HashMap<String, Option<Bytes>>,
    ) -> Result<(), KvError> {
        let mut batch = self.db.batch();
        let data = &self.generation.data;
        for (key, value) in overlay {
            match value {
                Some(v) => batch.insert(data, key, v.as_ref()),
                None => batch.remove(data, key),
            }
        }
        for (client, record) in self.sessions.take_dirty() {
            match record {
                Some(r) => batch.insert(
                    &self.generation.sessions,
                    client_key(client),
                    encode_session(&r).as_ref(),
                ),
                None => batch.remove(&self.generation.sessions, client_key(client)),
            }
        }
        batch.insert(&self.meta, META_APPLIED, applied.0.to_be_bytes());
        batch.insert(&self.meta, META_CLOCK, self.clock_ms.to_be_bytes());
        batch.commit()?;
        self.applied = applied;
        self.shared.applied.store(applied.0, Ordering::Release);
        Ok(())
    }

    fn apply_command(
        &mut self,
        entry: &Entry,
        bytes: &[u8],
        overlay: &mut HashMap<String, Option<Bytes>>,
    ) -> Result<Bytes, KvError> {
        let cmd = match KvCommand::decode(bytes) {
            Ok(cmd) => cmd,
            Err(e) => return Ok(KvResponse::Rejected { reason: e.to_string() }.encode()),
        };
        self.clock_ms = self.clock_ms.max(cmd.ts_ms);
        self.sessions.expire(self.clock_ms);
        if let Err(reason) = cmd.op.validate() {
            return Ok(KvResponse::Rejected { reason }.encode());
        }
        if let Some(s) = cmd.session {
            match self.sessions.check(s.client, s.seq) {
                SessionCheck::New => {}
                SessionCheck::Replay(response) => {
                    // A retry is a use: it keeps the session fresh.
                    self.sessions.record(
                        s.client,
                        s.seq,
                        entry.index.0,
                        self.clock_ms,
                        response.clone(),
                    );
                    return Ok(response);
                }
                SessionCheck::Stale { last_seq } => {
                    return Ok(KvResponse::StaleSequence { last_seq }.encode());
                }
            }
        }
        let response = self.execute(entry, cmd.op, overlay)?.encode();
        if let Some(s) = cmd.session {
            self.sessions.record(s.client, s.seq, entry.index.0, self.clock_ms, response.clone());
        }
        Ok(response)
    }

    fn execute(
        &self,
        entry: &Entry,
        op: KvOp,
        overlay: &mut HashMap<String, Option<Bytes>>,
    ) -> Result<KvResponse, KvError> {
        let (index, term) = (entry.index, entry.term);
        Ok(match op {
            KvOp::Put { key, value } => {
                overlay.insert(key, Some(value));
                KvResponse::Put { index, term }
            }
            KvOp::Delete { key } => {
                let deleted = self.current(&key, overlay)?.is_some();
                overlay.insert(key, None);
                KvResponse::Delete { index, term, deleted }
            }
            KvOp::Cas { key, expected, value } => {
                let current = self.current(&key, overlay)?;
                if current == expected {
                    overlay.insert(key, Some(value.clone()));
                    KvResponse::Cas { index, term, succeeded: true, current: Some(value) }
                } else {
                    KvResponse::Cas { index, term, succeeded: false, current }
                }
            }
        })
    }

    /// The value of `key` as of the entries applied so far in this batch.
    fn current(
        &self,
        key: &str,
        overlay: &HashMap<String, Option<Bytes>>,
    ) -> Result<Option<Bytes>, KvError> {
        if let Some(v) = overlay.get(key) {
            return Ok(v.clone());
        }
        Ok(self.generation.data.get(key)?.map(|v| Bytes::copy_from_slice(&v)))
    }

    fn restore_from(&mut self, meta: &SnapshotMeta, reader: &mut dyn Read) -> Result<(), KvError> {
        if self.poisoned {
            return Err(KvError::Poisoned);
        }
        // Check the header before creating keyspaces (each costs a few fsyncs).
        let mut stream = SnapshotReader::new(BufReader::new(reader))?;
        if stream.applied != meta.last_index {
            return Err(KvError::malformed(
                "snapshot",
                format!("stream is at index {}, metadata says {}", stream.applied, meta.last_index),
            ));
        }
        let id = self.next_generation;
        self.next_generation += 1;
        let new = open_generation(&self.db, id)?;
        let (sessions, clock_ms) = match self.fill(&new, &mut stream) {
            Ok(filled) => filled,
            Err(e) => {
                // The old generation was never touched. If this cleanup fails too, the next
                // open deletes the leftover.
                let _ = drop_generation(&self.db, new);
                return Err(e);
            }
        };
        #[cfg(test)]
        if self.crash_before_flip {
            return Err(KvError::Corrupt("simulated crash before the flip".into()));
        }
        let mut flip = self.db.batch().durability(Some(PersistMode::SyncData));
        flip.insert(&self.meta, META_GENERATION, id.to_be_bytes());
        flip.insert(&self.meta, META_APPLIED, meta.last_index.0.to_be_bytes());
        flip.insert(&self.meta, META_CLOCK, clock_ms.to_be_bytes());
        {
            let mut current = self.shared.current.write().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = flip.commit() {
                // Whether the flip reached the disk is unknown: stop here.
                self.poisoned = true;
                return Err(e.into());
            }
            *current = new.clone();
            self.shared.applied.store(meta.last_index.0, Ordering::Release);
        }
        let old = std::mem::replace(&mut self.generation, new);
        self.applied = meta.last_index;
        self.clock_ms = clock_ms;
        self.sessions = sessions;
        // The switch is durable; the old keyspaces are garbage. A snapshot still being
        // written from them keeps its handles (fjall deletes the folder after the last
        // reference goes), and if deleting fails, the next open does it.
        let _ = drop_generation(&self.db, old);
        Ok(())
    }

    /// Writes a snapshot stream into the (empty) generation `new`, checking it as it goes.
    fn fill(
        &self,
        new: &Generation,
        stream: &mut SnapshotReader<impl Read>,
    ) -> Result<(SessionTable, u64), KvError> {
        let mut sessions = SessionTable::new(self.sessions.limits());
        let mut batch = self.db.batch();
        let mut batch_bytes = 0;
        let mut last_key: Option<Vec<u8>> = None;
        while let Some(record) = stream.next_record()? {
            match record {
                SnapshotRecord::Kv { key, value } => {
                    // Sorted and unique, as written: two writes of one key in one batch would
                    // be ambiguous.
                    if last_key.as_ref().is_some_and(|last| *last >= key) {
                        return Err(KvError::malformed("snapshot", "keys out of order"));
                    }
                    batch_bytes += key.len() + value.len();
                    batch.insert(&new.data, key.as_slice(), value);
                    last_key = Some(key);
                }
                SnapshotRecord::Session { client, record } => {
                    let encoded = encode_session(&record);
                    sessions.load(client, record).map_err(|e| KvError::malformed("snapshot", e))?;
                    batch_bytes += encoded.len() + 8;
                    batch.insert(&new.sessions, client_key(client), encoded.as_ref());
                }
            }
            if batch_bytes >= RESTORE_BATCH_BYTES {
                std::mem::replace(&mut batch, self.db.batch()).commit()?;
                batch_bytes = 0;
            }
        }
        batch.commit()?;
        if sessions.len() > sessions.limits().max_sessions {
            return Err(KvError::malformed("snapshot", "more sessions than this node's limit"));
        }
        Ok((sessions, stream.clock_ms))
    }
}

impl StateMachine for KvStateMachine {
    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Option<Bytes>>, SmError> {
        Ok(self.apply_entries(entries)?)
    }

    /// Opens the view on the applying thread, between two `apply` batches. That matters:
    /// in fjall 3.1.13 a flush that installs a new table version raises the visible
    /// sequence number past a batch still being committed, so a view opened during a
    /// commit can see that batch's items appear (docs/kv.md, "Local reads"). Here no KV
    /// batch is in flight, and every later one gets a sequence number above the view's.
    fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError> {
        if self.poisoned {
            return Err(KvError::Poisoned.into());
        }
        Ok(Box::new(KvSnapshot {
            view: self.db.snapshot(),
            data: self.generation.data.clone(),
            sessions: self.generation.sessions.clone(),
            index: self.applied,
            clock_ms: self.clock_ms,
        }))
    }

    /// Builds the snapshot's state in a fresh generation of keyspaces, then switches
    /// `generation`, `applied_index` and `clock_ms` in one synced batch, then deletes the
    /// old generation. A crash before the switch leaves the old state (the half-built
    /// generation is deleted at the next open); after it, the new one.
    fn restore(&mut self, meta: &SnapshotMeta, reader: &mut dyn Read) -> Result<(), SmError> {
        Ok(self.restore_from(meta, reader)?)
    }
}

/// Local reads of the applied state. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct KvReader {
    shared: Arc<Shared>,
}

impl KvReader {
    /// The value of `key` in the applied state.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>, KvError> {
        Ok(self.read(key)?.0)
    }

    /// The value of `key`, and the applied index when the read began: the value is at
    /// least as new as that index.
    ///
    /// One plain lookup, no point-in-time view. `commit` publishes `applied` only after its
    /// batch is in place, so a lookup that follows the load of `applied` sees every effect
    /// up to it. It may also see an effect of the batch being committed at that moment
    /// (fjall's plain reads see a batch's items as they are inserted, before it is
    /// published); those entries are committed in the log, and once one reader has seen
    /// such an item every later lookup sees it too, so answers never go back in time. A
    /// point-in-time view was used before and is not: it cost a snapshot and a second
    /// lookup, and a fjall 3.1 view opened during a commit can see that batch's items
    /// appear while a flush installs a new table version (docs/kv.md, "Local reads").
    pub fn read(&self, key: &[u8]) -> Result<(Option<Bytes>, LogIndex), KvError> {
        let current = self.shared.current.read().unwrap_or_else(|e| e.into_inner());
        let applied = self.shared.applied.load(Ordering::Acquire);
        let value = current.data.get(key)?.map(|v| Bytes::copy_from_slice(&v));
        Ok((value, LogIndex(applied)))
    }

    /// The state machine's applied index now.
    pub fn applied_index(&self) -> LogIndex {
        LogIndex(self.shared.applied.load(Ordering::Acquire))
    }
}

/// Memtable sizes of a generation's keyspaces. fjall's default (64 MiB each) let a node's
/// RSS grow past 100 MB under a sustained write load; the data is durable in the log and
/// the journal either way, so smaller memtables cost only more frequent (background)
/// flushes. Halving them again (8 → 4 MiB, 4 → 2 MiB) saved about 8 MB per node under 64
/// writers at the same throughput (docs/benchmarks.md, "Smaller memtables again"). The log
/// keyspace uses 8 MiB (`flotilla-log`).
const DATA_MEMTABLE_BYTES: u64 = 4 * 1024 * 1024;
const SESSIONS_MEMTABLE_BYTES: u64 = 2 * 1024 * 1024;

fn open_generation(db: &Database, id: u64) -> Result<Generation, KvError> {
    let sized = |bytes: u64| move || KeyspaceCreateOptions::default().max_memtable_size(bytes);
    Ok(Generation {
        data: db.keyspace(&format!("{DATA_PREFIX}{id}"), sized(DATA_MEMTABLE_BYTES))?,
        sessions: db.keyspace(&format!("{SESSIONS_PREFIX}{id}"), sized(SESSIONS_MEMTABLE_BYTES))?,
    })
}

fn drop_generation(db: &Database, g: Generation) -> Result<(), KvError> {
    db.delete_keyspace(g.data)?;
    db.delete_keyspace(g.sessions)?;
    Ok(())
}

/// Deletes every generation's keyspaces but `keep`'s; returns the highest generation seen.
fn drop_other_generations(db: &Database, keep: u64) -> Result<u64, KvError> {
    let mut highest = keep;
    for name in db.list_keyspace_names() {
        let name: &str = &name;
        let id = [DATA_PREFIX, SESSIONS_PREFIX]
            .iter()
            .find_map(|p| name.strip_prefix(p))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(id) = id {
            highest = highest.max(id);
            if id != keep {
                let handle = db.keyspace(name, KeyspaceCreateOptions::default)?;
                db.delete_keyspace(handle)?;
            }
        }
    }
    Ok(highest)
}

fn read_u64(ks: &Keyspace, key: &[u8]) -> Result<Option<u64>, KvError> {
    ks.get(key)?.map(|v| decode_u64(&v)).transpose()
}

fn decode_u64(v: &[u8]) -> Result<u64, KvError> {
    let arr: [u8; 8] =
        v.try_into().map_err(|_| KvError::Corrupt(format!("meta value of {} bytes", v.len())))?;
    Ok(u64::from_be_bytes(arr))
}

fn client_key(client: u64) -> [u8; 8] {
    client.to_be_bytes()
}

pub(crate) fn decode_client_key(key: &[u8]) -> Result<u64, KvError> {
    decode_u64(key)
}

pub(crate) fn encode_session(r: &SessionRecord) -> Bytes {
    crate::command::encode(SESSION_RECORD_VERSION, r)
}

pub(crate) fn decode_session(buf: &[u8]) -> Result<SessionRecord, KvError> {
    crate::command::decode(SESSION_RECORD_VERSION, "session record", buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClientSeq;
    use flotilla_raft::Term;

    fn put(index: u64, key: &str, value: &str) -> Entry {
        let op = KvOp::Put { key: key.into(), value: Bytes::copy_from_slice(value.as_bytes()) };
        let session = Some(ClientSeq { client: index, seq: 1 });
        let cmd = KvCommand { session, ts_ms: index, op };
        Entry {
            term: Term(1),
            index: LogIndex(index),
            payload: EntryPayload::Command(cmd.encode()),
        }
    }

    fn snapshot_bytes(sm: &mut KvStateMachine) -> Vec<u8> {
        let mut out = Vec::new();
        sm.snapshot().unwrap().write_to(&mut out).unwrap();
        out
    }

    /// A crash after the new generation is written but before the flip: at the next open
    /// the old state is found and the half-built generation is gone.
    #[test]
    fn crash_before_the_flip_leaves_the_old_state_after_reopen() {
        let src_dir = tempfile::tempdir().unwrap();
        let mut src =
            KvStateMachine::open(Database::builder(src_dir.path()).open().unwrap()).unwrap();
        src.apply(&[put(1, "new", "1"), put(2, "new2", "2")]).unwrap();
        let stream = snapshot_bytes(&mut src);
        let meta = SnapshotMeta { last_index: LogIndex(2), ..Default::default() };

        let dir = tempfile::tempdir().unwrap();
        let before;
        {
            let mut sm =
                KvStateMachine::open(Database::builder(dir.path()).open().unwrap()).unwrap();
            sm.apply(&[put(1, "old", "1")]).unwrap();
            before = snapshot_bytes(&mut sm);
            sm.crash_before_flip = true;
            assert!(sm.restore(&meta, &mut &stream[..]).is_err());
            sm.sync().unwrap();
            let names = sm.db.list_keyspace_names();
            assert!(
                names.iter().any(|n| &**n == "kv_data_1"),
                "the new generation was written: {names:?}"
            );
        }
        let db = Database::builder(dir.path()).open().unwrap();
        let mut sm = KvStateMachine::open(db.clone()).unwrap();
        assert_eq!(sm.applied_index(), LogIndex(1));
        assert_eq!(snapshot_bytes(&mut sm), before);
        let names = db.list_keyspace_names();
        assert!(!names.iter().any(|n| &**n == "kv_data_1" || &**n == "kv_sessions_1"), "{names:?}");
        // The next restore uses a generation number never used before and succeeds.
        sm.restore(&meta, &mut &stream[..]).unwrap();
        assert_eq!(snapshot_bytes(&mut sm), stream);
    }
}
