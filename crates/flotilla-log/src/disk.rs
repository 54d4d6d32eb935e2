//! The durable store on fjall.

use std::path::{Path, PathBuf};

use fjall::{Database, Keyspace, KeyspaceCreateOptions, OwnedWriteBatch, PersistMode};
use flotilla_raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

use crate::error::{Identity, LogError};
use crate::frame::{
    decode_entry, decode_meta, encode_entry, encode_meta, entry_key, frame_meta, key_index,
    unframe_meta, verify_entry,
};
use crate::store::{
    LogShape, LogStore, PurgePlan, StoredState, check_append, check_meta_key, check_range,
    plan_purge, term_at,
};
use crate::terms::TermRuns;

/// The keyspace of log entries: key = index as 8 big-endian bytes, value = an entry frame.
pub const LOG_KEYSPACE: &str = "log";
/// The keyspace of the store's own small records (identity, hard state, log start,
/// snapshot metadata) and of [`LogStore::put_meta`] blobs (keys prefixed `user/`).
pub const META_KEYSPACE: &str = "meta";

const KEY_IDENTITY: &str = "identity";
const KEY_HARD_STATE: &str = "hard_state";
const KEY_LOG_START: &str = "log_start";
const KEY_SNAPSHOT: &str = "snapshot";
const USER_META_PREFIX: &str = "user/";

/// The layout of the whole directory (keyspaces and records), recorded with the identity.
const STORE_FORMAT: u32 = 1;

/// fjall marks a database directory with this file (fjall 3.x `VERSION_MARKER`).
const FJALL_VERSION_MARKER: &str = "version";

/// Tuning for [`FjallLogStore::open_with`]. The defaults suit a Raft node.
#[derive(Clone, Debug)]
pub struct FjallOptions {
    /// The log keyspace's memtable size. Everything in memtables is replayed from the
    /// journal on open, so this bounds the replay part of reopen time.
    pub log_memtable_bytes: u64,
    /// fjall's cap on journal size before it forces memtable flushes (minimum 64 MiB).
    /// Small writes to the meta keyspace pin journals until this cap forces a flush, so it
    /// also bounds replay on open.
    pub journal_bytes_max: u64,
    /// fjall's block cache.
    pub cache_bytes: u64,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            log_memtable_bytes: 16 * 1024 * 1024,
            journal_bytes_max: 64 * 1024 * 1024,
            cache_bytes: 32 * 1024 * 1024,
        }
    }
}

/// How the identity is stored (with the store's format, so a future layout is detected).
#[derive(Serialize, Deserialize)]
struct StoredIdentity {
    format: u32,
    cluster_id: String,
    node_id: flotilla_raft::NodeId,
}

/// A [`LogStore`] on a fjall database: one directory per node, opened by one process.
///
/// Every state change that a Raft reply depends on is committed as one fjall batch with
/// `PersistMode::SyncData` (fjall's default commit only reaches a user-space buffer).
/// The state machine can share the database (see [`FjallLogStore::state_machine_keyspace`]).
///
/// After any write fails the store is *poisoned*: every later call returns
/// [`LogError::Poisoned`]. Stop the process and reopen; see [`LogError`].
pub struct FjallLogStore {
    dir: PathBuf,
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    /// Invariant: equals the `log_start` record on disk (or (0,0) when none), and every
    /// stored key is in `(log_start.0, terms.last()]`.
    log_start: (LogIndex, Term),
    /// The term of every stored entry. Invariant: `terms.last()` is the last stored index.
    terms: TermRuns,
    poisoned: bool,
}

impl FjallLogStore {
    /// Opens (or creates) the store in `dir` for the node `identity`.
    ///
    /// A fresh directory records `identity`; an existing one must hold the same identity or
    /// the open is refused ([`LogError::IdentityMismatch`]). A non-empty directory that is
    /// not a fjall database is refused ([`LogError::NotALogDir`]). Every stored entry's
    /// checksum is verified, and the entries must be consecutive.
    pub fn open(dir: impl AsRef<Path>, identity: Identity) -> Result<FjallLogStore, LogError> {
        FjallLogStore::open_with(dir, identity, FjallOptions::default())
    }

    /// [`FjallLogStore::open`] with explicit tuning.
    pub fn open_with(
        dir: impl AsRef<Path>,
        identity: Identity,
        options: FjallOptions,
    ) -> Result<FjallLogStore, LogError> {
        let dir = dir.as_ref().to_path_buf();
        check_dir(&dir)?;
        let db = Database::builder(&dir)
            .max_journaling_size(options.journal_bytes_max.max(64 * 1024 * 1024))
            .cache_size(options.cache_bytes)
            .open()
            .map_err(|e| match e {
                fjall::Error::Locked => LogError::Locked { dir: dir.clone() },
                other => LogError::from(other),
            })?;
        let memtable = options.log_memtable_bytes;
        let log = db.keyspace(LOG_KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size(memtable)
        })?;
        let meta = db.keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)?;
        let mut store = FjallLogStore {
            dir,
            db,
            log,
            meta,
            log_start: (LogIndex::ZERO, Term::ZERO),
            terms: TermRuns::new(LogIndex::ZERO),
            poisoned: false,
        };
        store.check_identity(&identity)?;
        store.log_start = store.read_meta(KEY_LOG_START)?.unwrap_or_default();
        store.terms = store.scan_terms()?;
        Ok(store)
    }

    /// The directory this store lives in.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The fjall database, for a state machine that keeps its data beside the log so that
    /// an apply and its `applied_index` commit in one batch. Never write to
    /// [`LOG_KEYSPACE`] or [`META_KEYSPACE`] through it.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Opens (creating if needed) a keyspace for the state machine in the same database.
    /// Refuses the store's own keyspace names and names fjall cannot take (empty, or longer
    /// than 255 bytes).
    pub fn state_machine_keyspace(&self, name: &str) -> Result<Keyspace, LogError> {
        if name == LOG_KEYSPACE || name == META_KEYSPACE {
            return Err(LogError::invalid(
                "keyspace name",
                format!("{name:?} is reserved for the log store"),
            ));
        }
        if name.is_empty() || name.len() > 255 {
            return Err(LogError::invalid(
                "keyspace name",
                format!("{name:?} must be 1..=255 bytes"),
            ));
        }
        Ok(self.db.keyspace(name, KeyspaceCreateOptions::default)?)
    }

    /// A write batch that commits durably (`PersistMode::SyncData`), for the state machine:
    /// put its changes and its `applied_index` in one batch and commit it.
    pub fn durable_batch(&self) -> OwnedWriteBatch {
        self.db.batch().durability(Some(PersistMode::SyncData))
    }

    fn check_identity(&mut self, identity: &Identity) -> Result<(), LogError> {
        if let Some(found) = self.read_meta::<StoredIdentity>(KEY_IDENTITY)? {
            if found.format != STORE_FORMAT {
                return Err(LogError::NotALogDir {
                    dir: self.dir.clone(),
                    reason: format!(
                        "it uses store format {}, this build reads format {STORE_FORMAT}",
                        found.format
                    ),
                });
            }
            let found = Identity { cluster_id: found.cluster_id, node_id: found.node_id };
            if &found != identity {
                return Err(LogError::IdentityMismatch {
                    dir: self.dir.clone(),
                    expected: identity.clone(),
                    found,
                });
            }
            return Ok(());
        }
        if self.log.first_key_value().is_some() || self.meta.first_key_value().is_some() {
            return Err(LogError::NotALogDir {
                dir: self.dir.clone(),
                reason: "it holds log data but no identity record".into(),
            });
        }
        let record = StoredIdentity {
            format: STORE_FORMAT,
            cluster_id: identity.cluster_id.clone(),
            node_id: identity.node_id,
        };
        let mut batch = self.durable_batch();
        batch.insert(&self.meta, KEY_IDENTITY, encode_meta(KEY_IDENTITY, &record)?);
        self.commit(batch)
    }

    /// Reads every stored entry's frame once: checks each checksum, that keys are
    /// consecutive from `log_start + 1` and that terms never decrease; returns the terms.
    fn scan_terms(&self) -> Result<TermRuns, LogError> {
        let mut terms = TermRuns::new(self.log_start.0);
        let mut prev_term = self.log_start.1;
        for guard in self.log.iter() {
            let (key, value) = guard.into_inner()?;
            let expected = terms.last().next();
            let index = self.check_key(&key, expected)?;
            let term = verify_entry(index, &value)?;
            if term < prev_term {
                return Err(LogError::Corrupt {
                    index,
                    reason: format!("term {term} is below the previous entry's term {prev_term}"),
                });
            }
            terms.push(term);
            prev_term = term;
        }
        Ok(terms)
    }

    /// Checks that a key read from the log keyspace is the index `expected`.
    fn check_key(&self, key: &[u8], expected: LogIndex) -> Result<LogIndex, LogError> {
        let Some(index) = key_index(key) else {
            return Err(LogError::Corrupt {
                index: expected,
                reason: format!("the log keyspace holds a {}-byte key {key:02x?}", key.len()),
            });
        };
        if index == expected {
            return Ok(index);
        }
        let reason = if index <= self.log_start.0 {
            format!("entry {index} is stored although the log starts after {}", self.log_start.0)
        } else {
            format!("missing: the stored log jumps from {} to {index}", expected.prev())
        };
        Err(LogError::Corrupt { index: expected.min(index), reason })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, LogError> {
        match self.meta.get(key)? {
            Some(value) => decode_meta(key, &value).map(Some),
            None => Ok(None),
        }
    }

    fn ensure_usable(&self) -> Result<(), LogError> {
        if self.poisoned { Err(LogError::Poisoned) } else { Ok(()) }
    }

    fn commit(&mut self, batch: OwnedWriteBatch) -> Result<(), LogError> {
        batch.commit().map_err(|e| {
            self.poisoned = true;
            LogError::from(e)
        })
    }

    fn with_shape<R>(&self, f: impl FnOnce(&LogShape<'_>) -> R) -> R {
        let term_of = |i: LogIndex| self.cached_term(i);
        f(&LogShape { log_start: self.log_start, last_index: self.terms.last(), term_of: &term_of })
    }

    fn cached_term(&self, index: LogIndex) -> Option<Term> {
        term_at(self.log_start, self.terms.last(), index, |i| self.terms.get(i))
    }

    /// Adds removals of every stored entry in `from..=to` to `batch`.
    fn remove_range(&self, batch: &mut OwnedWriteBatch, from: LogIndex, to: LogIndex) {
        for i in from.0..=to.0 {
            batch.remove(&self.log, entry_key(LogIndex(i)));
        }
    }

    /// Reads and verifies entries `lo..hi`, which the caller has checked are stored.
    fn read_range(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError> {
        const PREALLOC_MAX: u64 = 1 << 16;
        let mut out = Vec::with_capacity((hi.0 - lo.0).min(PREALLOC_MAX) as usize);
        let mut expected = lo;
        for guard in self.log.range(entry_key(lo)..entry_key(hi)) {
            let (key, value) = guard.into_inner()?;
            let index = self.check_key(&key, expected)?;
            out.push(decode_entry(index, &value)?);
            expected = expected.next();
        }
        if expected != hi {
            return Err(LogError::Corrupt {
                index: expected,
                reason: format!("missing: the stored log ends at {}", expected.prev()),
            });
        }
        Ok(out)
    }
}

/// Refuses a path that is not a directory, or a non-empty directory that fjall did not
/// create (a mistyped path must not become a database beside someone's files).
fn check_dir(dir: &Path) -> Result<(), LogError> {
    let refuse = |reason: String| LogError::NotALogDir { dir: dir.to_path_buf(), reason };
    match std::fs::metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(LogError::Io(e)),
        Ok(m) if !m.is_dir() => return Err(refuse("it is not a directory".into())),
        Ok(_) => {}
    }
    let empty = std::fs::read_dir(dir)?.next().is_none();
    if !empty && !dir.join(FJALL_VERSION_MARKER).exists() {
        return Err(refuse(format!(
            "it is not empty and has no fjall `{FJALL_VERSION_MARKER}` marker, so it is not a \
             log store (if a first start crashed while creating it, remove it and start again)"
        )));
    }
    Ok(())
}

impl LogStore for FjallLogStore {
    fn load(&self) -> Result<StoredState, LogError> {
        self.ensure_usable()?;
        let hard_state = self.read_meta(KEY_HARD_STATE)?.unwrap_or_default();
        let snapshot = self.read_meta(KEY_SNAPSHOT)?;
        let entries = self.read_range(self.log_start.0.next(), self.terms.last().next())?;
        Ok(StoredState { hard_state, snapshot, log_start: self.log_start, entries })
    }

    fn write(&mut self, hard_state: Option<&HardState>, entries: &[Entry]) -> Result<(), LogError> {
        self.ensure_usable()?;
        self.with_shape(|shape| check_append(shape, entries))?;
        if hard_state.is_none() && entries.is_empty() {
            return Ok(());
        }
        let mut batch = self.durable_batch();
        if let Some(hs) = hard_state {
            batch.insert(&self.meta, KEY_HARD_STATE, encode_meta(KEY_HARD_STATE, hs)?);
        }
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            // Entries the batch rewrites need no removal: a remove and an insert of the same
            // key in one batch share a sequence number, and their order would be ambiguous.
            if last.index < self.terms.last() {
                self.remove_range(&mut batch, last.index.next(), self.terms.last());
            }
            for e in entries {
                let mut value = Vec::with_capacity(e.approx_bytes() + 16);
                encode_entry(e, &mut value)?;
                batch.insert(&self.log, entry_key(e.index), value);
            }
            self.commit(batch)?;
            self.terms.truncate_from(first.index);
            for e in entries {
                self.terms.push(e.term);
            }
            return Ok(());
        }
        self.commit(batch)
    }

    fn purge(&mut self, upto: LogIndex) -> Result<(), LogError> {
        self.ensure_usable()?;
        let (upto, term) = match self.with_shape(|shape| plan_purge(shape, upto))? {
            PurgePlan::Nothing => return Ok(()),
            PurgePlan::Delete { upto, term } => (upto, term),
        };
        // Lazy durability: the journal is sequential, so the next synced write makes this
        // batch durable too. Until then a crash only leaves the purged entries in place.
        let mut batch = self.db.batch().durability(Some(PersistMode::Buffer));
        self.remove_range(&mut batch, self.log_start.0.next(), upto);
        batch.insert(&self.meta, KEY_LOG_START, encode_meta(KEY_LOG_START, &(upto, term))?);
        self.commit(batch)?;
        self.terms.purge_to(upto);
        self.log_start = (upto, term);
        Ok(())
    }

    fn save_snapshot_meta(&mut self, meta: &SnapshotMeta) -> Result<(), LogError> {
        self.ensure_usable()?;
        let mut batch = self.durable_batch();
        batch.insert(&self.meta, KEY_SNAPSHOT, encode_meta(KEY_SNAPSHOT, meta)?);
        self.commit(batch)
    }

    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta) -> Result<(), LogError> {
        self.ensure_usable()?;
        let start = (meta.last_index, meta.last_term);
        let mut batch = self.durable_batch();
        if self.terms.last() > self.log_start.0 {
            self.remove_range(&mut batch, self.log_start.0.next(), self.terms.last());
        }
        batch.insert(&self.meta, KEY_LOG_START, encode_meta(KEY_LOG_START, &start)?);
        batch.insert(&self.meta, KEY_SNAPSHOT, encode_meta(KEY_SNAPSHOT, meta)?);
        self.commit(batch)?;
        self.log_start = start;
        self.terms = TermRuns::new(start.0);
        Ok(())
    }

    fn entries(&self, lo: LogIndex, hi: LogIndex) -> Result<Vec<Entry>, LogError> {
        self.ensure_usable()?;
        if !self.with_shape(|shape| check_range(shape, lo, hi))? {
            return Ok(Vec::new());
        }
        self.read_range(lo, hi)
    }

    fn term(&self, index: LogIndex) -> Result<Option<Term>, LogError> {
        self.ensure_usable()?;
        Ok(self.cached_term(index))
    }

    fn first_index(&self) -> LogIndex {
        self.log_start.0.next()
    }

    fn last_index(&self) -> LogIndex {
        self.terms.last()
    }

    fn put_meta(&mut self, key: &str, value: &[u8]) -> Result<(), LogError> {
        self.ensure_usable()?;
        check_meta_key(key)?;
        let stored_key = format!("{USER_META_PREFIX}{key}");
        let mut batch = self.durable_batch();
        batch.insert(&self.meta, stored_key.as_str(), frame_meta(&stored_key, value));
        self.commit(batch)
    }

    fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, LogError> {
        self.ensure_usable()?;
        check_meta_key(key)?;
        let stored_key = format!("{USER_META_PREFIX}{key}");
        match self.meta.get(&stored_key)? {
            Some(value) => Ok(Some(unframe_meta(&stored_key, &value)?.to_vec())),
            None => Ok(None),
        }
    }
}

impl Drop for FjallLogStore {
    /// A clean shutdown makes a lazy purge durable too. Errors are ignored: nothing that
    /// was acknowledged depends on this persist.
    fn drop(&mut self) {
        if !self.poisoned {
            let _ = self.db.persist(PersistMode::SyncData);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{Harness, entries};
    use flotilla_raft::NodeId;

    pub(crate) fn identity(node: u64) -> Identity {
        Identity { cluster_id: "test-cluster".into(), node_id: NodeId(node) }
    }

    /// Fresh stores live in temporary directories that the harness keeps until it drops.
    #[derive(Default)]
    struct FjallHarness {
        dirs: Vec<tempfile::TempDir>,
    }

    impl Harness for FjallHarness {
        type Store = FjallLogStore;
        fn fresh(&mut self) -> FjallLogStore {
            let dir = tempfile::tempdir().unwrap();
            let store = FjallLogStore::open(dir.path(), identity(1)).unwrap();
            self.dirs.push(dir);
            store
        }
        fn reopen(&mut self, store: FjallLogStore) -> Result<FjallLogStore, LogError> {
            let dir = store.path().to_path_buf();
            drop(store);
            FjallLogStore::open(dir, identity(1))
        }
        fn corrupt_entry(&mut self, store: &mut FjallLogStore, index: LogIndex) {
            // Rewrite the stored value with one payload bit flipped, through fjall itself, so
            // that fjall's own checksums are intact and only ours can catch it.
            let log =
                store.database().keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default).unwrap();
            let mut value = log.get(entry_key(index)).unwrap().expect("entry is stored").to_vec();
            let last = value.len() - 1;
            value[last] ^= 0x04;
            log.insert(entry_key(index), value).unwrap();
        }
    }

    mod conformance {
        use super::FjallHarness;
        crate::conformance_tests!(FjallHarness::default());
    }

    #[test]
    fn another_nodes_directory_is_refused_naming_both_identities() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        s.write(None, &entries(1, 2, 1)).unwrap();
        drop(s);
        let other_cluster = Identity { cluster_id: "elsewhere".into(), node_id: NodeId(1) };
        for wrong in [identity(2), other_cluster] {
            let err = FjallLogStore::open(dir.path(), wrong.clone()).err().expect("refused");
            assert!(matches!(err, LogError::IdentityMismatch { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains(&identity(1).to_string()), "{msg}");
            assert!(msg.contains(&wrong.to_string()), "{msg}");
        }
        // The refusal changed nothing.
        let s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        assert_eq!(s.load().unwrap().entries, entries(1, 2, 1));
    }

    #[test]
    fn a_foreign_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a database").unwrap();
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(matches!(err, LogError::NotALogDir { .. }), "{err}");
        assert!(err.to_string().contains("not empty"), "{err}");

        let file = dir.path().join("notes.txt");
        let err = FjallLogStore::open(&file, identity(1)).err().expect("refused");
        assert!(err.to_string().contains("not a directory"), "{err}");
    }

    #[test]
    fn a_database_without_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::builder(dir.path()).open().unwrap();
            let log = db.keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default).unwrap();
            log.insert(entry_key(LogIndex(1)), b"x").unwrap();
            db.persist(PersistMode::SyncData).unwrap();
        }
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(err.to_string().contains("no identity record"), "{err}");
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(matches!(err, LogError::Locked { .. }), "{err}");
    }

    #[test]
    fn state_machine_keyspace_commits_with_the_log_database() {
        let dir = tempfile::tempdir().unwrap();
        let s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        for bad in [LOG_KEYSPACE, META_KEYSPACE, ""] {
            assert!(s.state_machine_keyspace(bad).is_err(), "{bad:?}");
        }
        let kv = s.state_machine_keyspace("kv").unwrap();
        let mut batch = s.durable_batch();
        batch.insert(&kv, "a", "1");
        batch.insert(&kv, "applied_index", 7u64.to_be_bytes());
        batch.commit().unwrap();
        drop((kv, s));
        let s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        let kv = s.state_machine_keyspace("kv").unwrap();
        assert_eq!(kv.get("applied_index").unwrap().as_deref(), Some(&7u64.to_be_bytes()[..]));
    }

    #[test]
    fn a_gap_in_the_stored_log_is_reported_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        s.write(None, &entries(1, 6, 1)).unwrap();
        let log = s.database().keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default).unwrap();
        log.remove(entry_key(LogIndex(4))).unwrap();
        // Reads see the hole at once, naming the missing index.
        let err = s.entries(LogIndex(2), LogIndex(6)).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { index: LogIndex(4), .. }), "{err}");
        drop((log, s));
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(matches!(err, LogError::Corrupt { index: LogIndex(4), .. }), "{err}");
        assert!(err.to_string().contains("jumps from 3 to 5"), "{err}");
    }

    #[test]
    fn corrupt_hard_state_is_reported_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        let hs = HardState { term: Term(3), voted_for: Some(NodeId(2)), commit: LogIndex(0) };
        s.write(Some(&hs), &[]).unwrap();
        let meta = s.database().keyspace(META_KEYSPACE, KeyspaceCreateOptions::default).unwrap();
        let mut value = meta.get(KEY_HARD_STATE).unwrap().unwrap().to_vec();
        value[6] ^= 1;
        meta.insert(KEY_HARD_STATE, value).unwrap();
        let err = s.load().unwrap_err();
        assert!(
            matches!(err, LogError::CorruptMeta { ref key, .. } if key == KEY_HARD_STATE),
            "{err}"
        );
    }
}
