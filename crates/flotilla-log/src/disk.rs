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
use crate::mark::Mark;
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
/// The counter of durable batches; see `mark.rs`.
const KEY_DURABLE_SEQ: &str = "durable_seq";
const USER_META_PREFIX: &str = "user/";

/// The layout of the whole directory (keyspaces and records), recorded with the identity.
const STORE_FORMAT: u32 = 1;

/// fjall marks a database directory with this file (fjall 3.x `VERSION_MARKER`).
const FJALL_VERSION_MARKER: &str = "version";

/// Tuning for [`FjallLogStore::open_with`]. The defaults suit a Raft node.
#[derive(Clone, Debug)]
pub struct FjallOptions {
    /// The log keyspace's memtable size. Everything in memtables is replayed from the
    /// journal on open, so this bounds the replay part of reopen time. 8 MiB: the log's
    /// entries are purged soon after each snapshot, so a larger memtable mostly held
    /// entries and their tombstones, and raised RSS under load by about 20 MB
    /// (docs/benchmarks.md, "Smaller memtables again").
    pub log_memtable_bytes: u64,
    /// fjall's cap on journal size before it forces memtable flushes (minimum 64 MiB).
    /// Small writes to the meta keyspace pin journals until this cap forces a flush, so it
    /// also bounds replay on open.
    pub journal_bytes_max: u64,
    /// fjall's block cache (shared by the log and the state machine's keyspaces). 8 MiB:
    /// recent entries are served from the memtable, and a larger cache mostly raised RSS
    /// under load (docs/benchmarks.md, "Smaller fjall memtables and block cache").
    pub cache_bytes: u64,
}

impl Default for FjallOptions {
    fn default() -> Self {
        FjallOptions {
            log_memtable_bytes: 8 * 1024 * 1024,
            journal_bytes_max: 64 * 1024 * 1024,
            cache_bytes: 8 * 1024 * 1024,
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
/// `PersistMode::SyncData`: one `fdatasync`. (fjall's default commit only hands the batch
/// to the OS: it survives a killed process, not a power loss.)
/// The state machine can share the database (see [`FjallLogStore::state_machine_keyspace`]).
///
/// After any write fails the store is *poisoned*: every later call returns
/// [`LogError::Poisoned`]. Stop the process and reopen; see [`LogError`].
pub struct FjallLogStore {
    dir: PathBuf,
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    mark: Mark,
    /// The counter of the last durable batch. Invariant: equals the `durable_seq` record on
    /// disk and the value in the mark file (except between a commit and its mark write).
    durable_seq: u64,
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
    /// not a fjall database is refused ([`LogError::NotALogDir`]), and so is a database that
    /// has lost acknowledged writes ([`LogError::LostWrites`], see `docs/log.md`).
    ///
    /// Open reads the ends of the log and the entries where the term changes (each
    /// checksum-verified) to rebuild the term cache; [`LogStore::load`] verifies the rest.
    /// A panic inside fjall while it recovers damaged files is turned into
    /// [`LogError::EnginePanic`] where panics unwind (tests); with `panic = "abort"` the
    /// process stops with fjall's message.
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
        if is_missing_or_empty(&dir)? {
            create_atomically(&dir, &identity, &options)?;
        }
        FjallLogStore::open_existing(dir, identity, options)
    }

    fn open_existing(
        dir: PathBuf,
        identity: Identity,
        options: FjallOptions,
    ) -> Result<FjallLogStore, LogError> {
        let db = open_database(&dir, &options)?;
        let memtable = options.log_memtable_bytes;
        let log = db.keyspace(LOG_KEYSPACE, || {
            KeyspaceCreateOptions::default().max_memtable_size(memtable)
        })?;
        let meta = db.keyspace(META_KEYSPACE, KeyspaceCreateOptions::default)?;
        let (mark, marked_seq) = Mark::open(&dir)?;
        let mut store = FjallLogStore {
            dir,
            db,
            log,
            meta,
            mark,
            durable_seq: 0,
            log_start: (LogIndex::ZERO, Term::ZERO),
            terms: TermRuns::new(LogIndex::ZERO),
            poisoned: false,
        };
        let fresh = store.check_identity(&identity)?;
        store.durable_seq = store.read_meta(KEY_DURABLE_SEQ)?.unwrap_or(0);
        if let Some(marked) = marked_seq.filter(|&m| m > store.durable_seq) {
            return Err(LogError::LostWrites {
                dir: store.dir.clone(),
                found: store.durable_seq,
                acknowledged: marked,
                mark: store.mark.path().to_path_buf(),
            });
        }
        if fresh {
            store.record_identity(&identity)?;
        }
        store.log_start = store.read_meta(KEY_LOG_START)?.unwrap_or_default();
        store.terms = store.recover_terms()?;
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

    /// Checks the recorded identity; returns true if the store is fresh (nothing recorded
    /// and no data), so the identity must be recorded.
    fn check_identity(&self, identity: &Identity) -> Result<bool, LogError> {
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
            return Ok(false);
        }
        if self.log.first_key_value().is_some() || self.meta.first_key_value().is_some() {
            return Err(LogError::NotALogDir {
                dir: self.dir.clone(),
                reason: "it holds log data but no identity record".into(),
            });
        }
        Ok(true)
    }

    fn record_identity(&mut self, identity: &Identity) -> Result<(), LogError> {
        let record = StoredIdentity {
            format: STORE_FORMAT,
            cluster_id: identity.cluster_id.clone(),
            node_id: identity.node_id,
        };
        let mut batch = self.durable_batch();
        batch.insert(&self.meta, KEY_IDENTITY, encode_meta(KEY_IDENTITY, &record)?);
        self.commit_durable(batch)
    }

    /// Rebuilds the term cache without reading the whole log: terms never decrease along
    /// the log, so the runs of equal terms are found by bisection with point reads, each
    /// checksum-verified (about `runs * log2(entries)` reads). Checks that the first stored
    /// entry follows `log_start` directly. Falls back to a full scan if the log has so many
    /// runs that bisection would read more than a scan. `load` (and every read) checks the
    /// rest: every checksum, no gaps, and every term against this cache.
    fn recover_terms(&self) -> Result<TermRuns, LogError> {
        let start = self.log_start;
        let Some(first) = self.log.first_key_value() else {
            return Ok(TermRuns::new(start.0));
        };
        let (key, value) = first.into_inner().map_err(reading(start.0.next()))?;
        let first = self.check_key(&key, start.0.next())?;
        let first_term = verify_entry(first, &value)?;
        let (key, value) = match self.log.last_key_value() {
            Some(last) => last.into_inner().map_err(reading(first))?,
            None => return Err(LogError::Corrupt { index: first, reason: "vanished".into() }),
        };
        let last = key_index(&key).ok_or_else(|| LogError::Corrupt {
            index: first,
            reason: format!("the log keyspace holds a {}-byte key {key:02x?}", key.len()),
        })?;
        let last_term = verify_entry(last, &value)?;
        check_terms_rise(first, start.1, first_term)?;

        let span = last.0 - first.0 + 1;
        let mut bisect = Bisect {
            store: self,
            runs: vec![(first, first_term)],
            reads_left: (span / 32).max(4_096),
        };
        let scan_instead = !bisect.find_runs((first, first_term), (last, last_term))?;
        let runs = if scan_instead { return self.scan_terms() } else { bisect.runs };
        TermRuns::from_runs(start.0, last, runs).ok_or_else(|| LogError::Corrupt {
            index: last,
            reason: "stored terms do not form a non-decreasing log".into(),
        })
    }

    /// The slow path of `recover_terms`: reads every entry's frame once, checking each
    /// checksum, that keys are consecutive and that terms never decrease.
    fn scan_terms(&self) -> Result<TermRuns, LogError> {
        let mut terms = TermRuns::new(self.log_start.0);
        let mut prev_term = self.log_start.1;
        for guard in self.log.iter() {
            let (key, value) = guard.into_inner().map_err(reading(terms.last().next()))?;
            let index = self.check_key(&key, terms.last().next())?;
            let term = verify_entry(index, &value)?;
            check_terms_rise(index, prev_term, term)?;
            terms.push(term);
            prev_term = term;
        }
        Ok(terms)
    }

    /// The checksum-verified term of the stored entry `index`.
    fn read_term(&self, index: LogIndex) -> Result<Term, LogError> {
        match self.log.get(entry_key(index)).map_err(reading(index))? {
            Some(value) => verify_entry(index, &value),
            None => Err(LogError::Corrupt {
                index,
                reason: "missing: the log has entries before and after it".into(),
            }),
        }
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

    /// Commits `batch` with one `SyncData` persist, stamped with the next durable-write
    /// counter, then records the counter in the mark file (see `mark.rs`).
    fn commit_durable(&mut self, mut batch: OwnedWriteBatch) -> Result<(), LogError> {
        let seq = self.durable_seq + 1;
        batch.insert(&self.meta, KEY_DURABLE_SEQ, encode_meta(KEY_DURABLE_SEQ, &seq)?);
        self.commit(batch.durability(Some(PersistMode::SyncData)))?;
        self.durable_seq = seq;
        self.mark.record(seq).inspect_err(|_| self.poisoned = true)
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
        // The range is within the cached bounds of what is stored, so this is the real size.
        let mut out = Vec::with_capacity((hi.0 - lo.0) as usize);
        let mut expected = lo;
        for guard in self.log.range(entry_key(lo)..entry_key(hi)) {
            let (key, value) = guard.into_inner().map_err(reading(expected))?;
            let index = self.check_key(&key, expected)?;
            let entry = decode_entry(index, &value)?;
            let cached = self.terms.get(index);
            if cached != Some(entry.term) {
                return Err(LogError::Corrupt {
                    index,
                    reason: format!(
                        "stored term {} disagrees with the term {cached:?} found at open",
                        entry.term
                    ),
                });
            }
            out.push(entry);
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

/// Opens the fjall database, turning a panic inside fjall (it asserts on some damaged
/// metadata files) into an error where panics unwind.
fn open_database(dir: &Path, options: &FjallOptions) -> Result<Database, LogError> {
    let builder = Database::builder(dir)
        .max_journaling_size(options.journal_bytes_max.max(64 * 1024 * 1024))
        .cache_size(options.cache_bytes);
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.open()));
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(fjall::Error::Locked)) => Err(LogError::Locked { dir: dir.to_path_buf() }),
        Ok(Err(e)) => {
            Err(LogError::Engine { during: format!("opening {}", dir.display()), source: e })
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(LogError::EnginePanic { dir: dir.to_path_buf(), message: what.to_owned() })
        }
    }
}

/// Wraps a fjall error met while reading the log near `index`, so the message says where.
fn reading(index: LogIndex) -> impl FnOnce(fjall::Error) -> LogError {
    move |e| match e {
        fjall::Error::Poisoned => LogError::Poisoned,
        source => LogError::Engine { during: format!("reading log entry {index}"), source },
    }
}

/// A search for the runs of equal terms between two stored entries.
struct Bisect<'a> {
    store: &'a FjallLogStore,
    /// The runs found so far, in index order: `(first index, term)`.
    runs: Vec<(LogIndex, Term)>,
    /// Point reads left before a full scan is cheaper.
    reads_left: u64,
}

impl Bisect<'_> {
    /// Appends to `runs` every run that starts in `(lo, hi]`, where the run holding `lo` is
    /// already the last in `runs`. Returns false when out of reads.
    fn find_runs(&mut self, lo: (LogIndex, Term), hi: (LogIndex, Term)) -> Result<bool, LogError> {
        check_terms_rise(hi.0, lo.1, hi.1)?;
        if lo.1 == hi.1 {
            return Ok(true); // One term at both ends: the same term everywhere between.
        }
        if hi.0 == lo.0.next() {
            self.runs.push(hi);
            return Ok(true);
        }
        if self.reads_left == 0 {
            return Ok(false);
        }
        self.reads_left -= 1;
        let mid = LogIndex(lo.0.0 + (hi.0.0 - lo.0.0) / 2);
        let mid = (mid, self.store.read_term(mid)?);
        Ok(self.find_runs(lo, mid)? && self.find_runs(mid, hi)?)
    }
}

/// Refuses a term that is lower than the one before it: Raft logs never go back in term.
fn check_terms_rise(index: LogIndex, before: Term, term: Term) -> Result<(), LogError> {
    if term < before {
        return Err(LogError::Corrupt {
            index,
            reason: format!("term {term} is below the term {before} of an earlier entry"),
        });
    }
    Ok(())
}

/// Refuses a path that is not a directory, or a non-empty directory that fjall did not
/// create (a mistyped path must not become a database beside someone's files).
fn is_missing_or_empty(dir: &Path) -> Result<bool, LogError> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => Ok(entries.next().is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(LogError::Io(e)),
    }
}

/// Where a new store is built before it is moved into place: `<dir>.creating`.
fn staging_path(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_else(|| "db".into());
    name.push(".creating");
    dir.with_file_name(name)
}

/// Creates a store in a staging directory (fjall's files, the keyspaces and the recorded
/// identity, synced), then renames it to `dir` and syncs the parent: a first start killed
/// at any moment leaves either no store or a complete one, never a half-created directory
/// that the next start must refuse. A staging directory left by such a crash held nothing
/// anyone was told about (the node had not opened its store yet) and is removed.
fn create_atomically(
    dir: &Path,
    identity: &Identity,
    options: &FjallOptions,
) -> Result<(), LogError> {
    let staging = staging_path(dir);
    match std::fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(LogError::Io(e)),
        _ => {}
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    drop(FjallLogStore::open_existing(staging.clone(), identity.clone(), options.clone())?);
    if dir.exists() {
        // Empty (checked by the caller): rename cannot replace a directory on every system.
        std::fs::remove_dir(dir)?;
    }
    std::fs::rename(&staging, dir)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

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
            self.commit_durable(batch)?;
            self.terms.truncate_from(first.index);
            for e in entries {
                self.terms.push(e.term);
            }
            return Ok(());
        }
        self.commit_durable(batch)
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
        self.commit_durable(batch)
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
        self.commit_durable(batch)?;
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
        self.commit_durable(batch)
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

    #[test]
    fn a_first_start_that_crashed_mid_creation_leaves_nothing_to_refuse() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("db");
        // What a kill -9 in the middle of creating the store leaves: a staging directory
        // with some of fjall's files (no version marker, no identity).
        let staging = staging_path(&dir);
        std::fs::create_dir_all(staging.join("journals")).unwrap();
        std::fs::write(staging.join("journals").join("0"), b"half").unwrap();
        let mut s = FjallLogStore::open(&dir, identity(1)).unwrap();
        assert!(!staging.exists(), "the staging directory is gone");
        s.write(None, &entries(1, 3, 1)).unwrap();
        drop(s);
        let s = FjallLogStore::open(&dir, identity(1)).unwrap();
        assert_eq!(s.load().unwrap().entries.len(), 3);
        // An existing empty directory (made by an operator, say) is filled the same way.
        let empty = root.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        drop(FjallLogStore::open(&empty, identity(2)).unwrap());
        assert!(empty.join(FJALL_VERSION_MARKER).exists());
        assert!(FjallLogStore::open(&empty, identity(3)).is_err(), "identity is recorded");
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
    fn a_gap_in_the_stored_log_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        s.write(None, &entries(1, 6, 1)).unwrap();
        let log = s.database().keyspace(LOG_KEYSPACE, KeyspaceCreateOptions::default).unwrap();
        log.remove(entry_key(LogIndex(4))).unwrap();
        // Reads see the hole at once, naming the missing index.
        let err = s.entries(LogIndex(2), LogIndex(6)).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { index: LogIndex(4), .. }), "{err}");
        drop((log, s));
        // Open bisects the terms and may not pass index 4; then load must report it.
        let err = match FjallLogStore::open(dir.path(), identity(1)) {
            Err(e) => e,
            Ok(s) => s.load().unwrap_err(),
        };
        assert!(matches!(err, LogError::Corrupt { index: LogIndex(4), .. }), "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
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

    /// Writes `terms` (one per index from 1) and checks what reopening finds.
    fn reopen_with_terms(terms: &[u64]) -> (FjallLogStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        let all: Vec<Entry> = terms
            .iter()
            .enumerate()
            .map(|(i, &t)| crate::conformance::entry(i as u64 + 1, t))
            .collect();
        for chunk in all.chunks(1000) {
            s.write(None, chunk).unwrap();
        }
        drop(s);
        let s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        for (i, &t) in terms.iter().enumerate() {
            assert_eq!(s.term(LogIndex(i as u64 + 1)).unwrap(), Some(Term(t)), "index {}", i + 1);
        }
        assert_eq!(s.term(LogIndex(terms.len() as u64 + 1)).unwrap(), None);
        assert_eq!(s.load().unwrap().entries, all);
        (s, dir)
    }

    #[test]
    fn open_bisects_term_runs_and_agrees_with_a_full_scan() {
        // Runs of uneven lengths, including one-entry runs and a run at each end.
        let mut terms = vec![1];
        for (term, len) in [(2, 1), (3, 777), (5, 2), (6, 1), (9, 3000), (10, 1)] {
            terms.extend(std::iter::repeat_n(term, len));
        }
        let (s, _dir) = reopen_with_terms(&terms);
        let n = terms.len() as u64;
        let mut bisect =
            Bisect { store: &s, runs: vec![(LogIndex(1), Term(1))], reads_left: 1_000 };
        assert!(bisect.find_runs((LogIndex(1), Term(1)), (LogIndex(n), Term(10))).unwrap());
        assert_eq!(bisect.runs.len(), 7);
        assert!(1_000 - bisect.reads_left < 7 * 13, "{} reads", 1_000 - bisect.reads_left);
        assert_eq!(s.recover_terms().unwrap(), s.scan_terms().unwrap());
    }

    #[test]
    fn open_falls_back_to_a_scan_when_terms_change_too_often() {
        // A new term every entry: bisection would read more than a scan.
        let terms: Vec<u64> = (1..=5_000).collect();
        let (s, _dir) = reopen_with_terms(&terms);
        let mut bisect =
            Bisect { store: &s, runs: vec![(LogIndex(1), Term(1))], reads_left: 4_096 };
        assert!(!bisect.find_runs((LogIndex(1), Term(1)), (LogIndex(5_000), Term(5_000))).unwrap());
        assert_eq!(s.recover_terms().unwrap(), s.scan_terms().unwrap());
    }

    #[test]
    fn a_database_behind_its_mark_has_lost_writes_and_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        s.write(None, &entries(1, 3, 1)).unwrap();
        let seq = s.durable_seq;
        assert_eq!(seq, 2, "identity, then one write");
        drop(s);
        // As if fjall had dropped the journal's last two synced batches.
        let (mut mark, found) = Mark::open(dir.path()).unwrap();
        assert_eq!(found, Some(seq));
        mark.record(seq + 2).unwrap();
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(matches!(err, LogError::LostWrites { found: 2, acknowledged: 4, .. }), "{err}");
        assert!(err.is_fatal());
        // The documented override: deleting the mark accepts what the database holds.
        std::fs::remove_file(dir.path().join(crate::MARK_FILE)).unwrap();
        let s = FjallLogStore::open(dir.path(), identity(1)).unwrap();
        assert_eq!(s.load().unwrap().entries, entries(1, 3, 1));
    }

    #[test]
    fn a_damaged_mark_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        drop(FjallLogStore::open(dir.path(), identity(1)).unwrap());
        let path = dir.path().join(crate::MARK_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[3] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let err = FjallLogStore::open(dir.path(), identity(1)).err().expect("refused");
        assert!(
            matches!(err, LogError::CorruptMeta { ref key, .. } if key == crate::MARK_FILE),
            "{err}"
        );
    }
}
