//! Snapshots in the running node: building them in the background from the state
//! machine's copy-on-write view, streaming them to followers in chunks with resume, and
//! receiving and installing one.
//!
//! Files live in `DATA_DIR/snapshots/`: `snap-<index>-<term>.snap` (+ `.meta`, JSON). A
//! snapshot is written to a `.tmp` file, fsync'd, renamed, then its `.meta` sidecar is
//! written the same way, so a crash in the middle leaves the previous snapshot usable (a
//! `.snap` without its sidecar is ignored). Older files are deleted only after the log
//! store recorded the new snapshot; files being sent stay readable through their open
//! handle.
//!
//! # Building (leader and followers alike)
//! `build_snapshot` asks the apply thread for a view (`TakeView`: fjall's MVCC snapshot,
//! O(1), so applies go on), then the writer thread ([`SnapshotActor`]) streams it to a
//! file with a CRC32C over every byte. Once durable, the log store records its metadata
//! and the core compacts the log prefix (`PurgeLog`).
//!
//! # Sending
//! Stop-and-wait, one chunk of [`CHUNK_BYTES`] in flight per follower: the follower acks
//! each chunk once it is written, so the sender never outruns the follower's disk (flow
//! control), and heartbeats, which share the connection, never wait behind more than one
//! chunk. Acks carry the receiver's next offset, so after a lost chunk, a lost ack or a
//! reconnect the sender resends from the last acknowledged byte (after
//! [`CHUNK_RESEND_AFTER`] without an answer), never from 0 unless the follower lost its
//! partial copy. A transfer that makes no progress for [`TRANSFER_GIVE_UP_AFTER`] is
//! dropped and offered again by the core.
//!
//! # Receiving and installing
//! [`SnapshotReceiver`] decides what each chunk is; the bytes go to `incoming.tmp` on the
//! I/O thread, and the last one is fsync'd and renamed into place, checksum verified. Then
//! the core is told (`InstallSnapshot`); when it accepts, the apply thread restores the
//! state machine (atomic: a generation flip in the KV store), then the log store resets to
//! the snapshot, then the core is told it is installed. A crash anywhere in between is
//! reconciled at the next start (`supervisor`).
//!
//! # Events (`/v1/events`)
//! `snapshot_started`, `snapshot_built` {snapshot_index, bytes, ms}; on a leader
//! `snapshot_send_started` {to, snapshot_index, bytes}, `snapshot_send_resumed` {to,
//! offset}, `snapshot_send_done` {to, bytes, bytes_sent, resumes, ms},
//! `snapshot_send_abandoned` {to, offset}; on a follower `snapshot_receive_started`
//! {from, snapshot_index, bytes}, `snapshot_received` {from, snapshot_index, bytes, ms},
//! `snapshot_install_started`, `snapshot_restored` {snapshot_index, bytes, ms},
//! `snapshot_install_failed` {snapshot_index, error, ms}, and the
//! core's `snapshot_installed` {index, term}.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use flotilla_raft::{LogIndex, Message, MessageBody, NodeId, SnapshotMeta};
use flotilla_wire::snapshot::ChunkVerdict;
use flotilla_wire::{SnapshotAck, SnapshotChunk, SnapshotId, SnapshotReceiver, WireMessage};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::api::{ClientError, SmError, SnapshotSource};
use crate::apply_actor::{Restore, TakeView};
use crate::log_actor::{ResetToSnapshot, SaveSnapshotMeta};
use crate::raft_actor::{RaftActor, fatal};

/// Bytes per snapshot chunk: small enough that heartbeats never wait long behind one.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Resend from the last acknowledged offset when the follower has not answered this long.
pub const CHUNK_RESEND_AFTER: Duration = Duration::from_secs(1);
/// Give up on a transfer that made no progress for this long (the core offers it again).
pub const TRANSFER_GIVE_UP_AFTER: Duration = Duration::from_secs(20);
/// How often the raft actor looks at transfers and at the auto-snapshot threshold.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// After an automatic snapshot found nothing it could describe, wait this long.
const AUTO_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A `POST /v1/admin/snapshot` waiting for its answer.
pub(crate) struct SnapshotWaiter {
    pub tx: oneshot::Sender<Result<Value, ClientError>>,
    /// The index applied when the request came: the answer must cover it. A build already
    /// in flight may have taken its view earlier; then a follow-up build answers.
    pub covers: LogIndex,
}

/// A snapshot on disk.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub len: u64,
    pub checksum: u32,
    pub id: SnapshotId,
}

impl SnapshotFile {
    fn json(&self) -> Value {
        json!({"index": self.meta.last_index.0, "term": self.meta.last_term.0, "bytes": self.len,
               "checksum": self.checksum})
    }
}

/// One outgoing transfer.
struct Sending {
    file: SnapshotFile,
    /// Open for the whole transfer: a newer snapshot may delete the path meanwhile.
    fd: File,
    /// The offset of the chunk in flight (the receiver's next offset, as far as we know).
    next_offset: u64,
    started: Instant,
    last_progress: Instant,
    last_sent: Instant,
    bytes_sent: u64,
    /// Times we resent from the last acknowledged offset after a silence.
    resumes: u32,
}

/// The transfer this node is receiving, for status and events.
#[derive(Clone, Copy)]
struct Receiving {
    from: NodeId,
    id: SnapshotId,
    total_len: u64,
    offset: u64,
    started: Instant,
}

pub struct SnapshotState {
    pub dir: PathBuf,
    pub building: bool,
    /// The snapshot the log store records (built here, or installed); what we send.
    pub current: Option<SnapshotFile>,
    /// A complete snapshot received from a leader, until it is installed.
    received: Option<SnapshotFile>,
    /// Restore and log reset in progress.
    installing: bool,
    sends: BTreeMap<NodeId, Sending>,
    receiver: SnapshotReceiver,
    receiving: Option<Receiving>,
    last_built_index: LogIndex,
    waiters: Vec<SnapshotWaiter>,
    last_check: Instant,
    /// No automatic snapshot before this (the last attempt found nothing to describe).
    retry_at: Option<Instant>,
    /// The thread that writes snapshot files.
    pub writer: Option<Addr<SnapshotActor>>,
    /// The thread that writes received chunks (not the writer: a long build must not
    /// stall a transfer).
    pub io: Option<Addr<SnapshotActor>>,
}

impl SnapshotState {
    pub fn new(dir: PathBuf) -> SnapshotState {
        SnapshotState {
            dir,
            building: false,
            current: None,
            received: None,
            installing: false,
            sends: BTreeMap::new(),
            receiver: SnapshotReceiver::new(),
            receiving: None,
            last_built_index: LogIndex::ZERO,
            waiters: Vec::new(),
            last_check: Instant::now(),
            retry_at: None,
            writer: None,
            io: None,
        }
    }

    fn incoming_path(&self) -> PathBuf {
        self.dir.join("incoming.tmp")
    }

    /// Deletes every snapshot file but the current one and one waiting to be installed,
    /// and leftover `.tmp` files unless a build is writing one.
    fn clean_up(&self, include_tmp: bool) {
        let keep: Vec<&Path> =
            self.current.iter().chain(self.received.iter()).map(|f| f.path.as_path()).collect();
        remove_others(&self.dir, &keep, include_tmp);
    }

    /// For `/v1/status`.
    pub fn status_json(&self) -> Value {
        let now = Instant::now();
        let sends: Vec<Value> = self
            .sends
            .iter()
            .map(|(to, s)| {
                json!({"to": to.0, "snapshot_index": s.file.meta.last_index.0,
                       "offset": s.next_offset, "bytes": s.file.len, "resumes": s.resumes,
                       "elapsed_ms": now.duration_since(s.started).as_millis() as u64})
            })
            .collect();
        let receiving = self.receiving.map(|r| {
            json!({"from": r.from.0, "offset": r.offset, "bytes": r.total_len,
                   "elapsed_ms": now.duration_since(r.started).as_millis() as u64})
        });
        json!({
            "current": self.current.as_ref().map(SnapshotFile::json),
            "building": self.building,
            "installing": self.installing,
            "sending": sends,
            "receiving": receiving,
        })
    }
}

fn file_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}", meta.last_index.0, meta.last_term.0)
}

/// Every complete snapshot in `dir` (a `.snap` with a readable sidecar and the length it
/// names), oldest first.
pub fn list_snapshots(dir: &Path) -> Vec<SnapshotFile> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else { return out };
    for entry in rd.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else { continue };
        let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
        let Some(meta) =
            v.get("meta").and_then(|m| serde_json::from_value::<SnapshotMeta>(m.clone()).ok())
        else {
            continue;
        };
        let data = path.with_extension("snap");
        let Ok(md) = fs::metadata(&data) else { continue };
        let (Some(checksum), Some(len), Some(id)) = (
            v.get("checksum").and_then(Value::as_u64),
            v.get("len").and_then(Value::as_u64),
            v.get("id").and_then(Value::as_u64),
        ) else {
            continue;
        };
        if md.len() != len {
            continue;
        }
        out.push(SnapshotFile {
            meta,
            path: data,
            len,
            checksum: checksum as u32,
            id: SnapshotId(id),
        });
    }
    out.sort_by_key(|f| f.meta.last_index);
    out
}

/// The newest complete snapshot in `dir` (ignoring partial `.tmp` files).
pub fn latest_snapshot(dir: &Path) -> Option<SnapshotFile> {
    list_snapshots(dir).pop()
}

pub(crate) fn write_meta_sidecar(file: &SnapshotFile) -> std::io::Result<()> {
    let side = file.path.with_extension("meta");
    let tmp = file.path.with_extension("meta.tmp");
    let body =
        json!({"meta": file.meta, "len": file.len, "checksum": file.checksum, "id": file.id.0});
    {
        let mut f = File::create(&tmp)?;
        f.write_all(body.to_string().as_bytes())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, &side)?;
    sync_dir(&side)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Deletes a snapshot's files (sidecar first, so a half-deleted one is ignored).
pub fn delete_snapshot(file: &SnapshotFile) {
    let _ = fs::remove_file(file.path.with_extension("meta"));
    let _ = fs::remove_file(&file.path);
}

/// Deletes every snapshot file in `dir` other than those of `keep`; `.tmp` files too when
/// `include_tmp`.
fn remove_others(dir: &Path, keep: &[&Path], include_tmp: bool) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let keep_stems: Vec<_> = keep.iter().filter_map(|k| k.file_stem()).collect();
    for entry in rd.flatten() {
        let p = entry.path();
        let is_snap =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap-"));
        let stem = p.file_name().and_then(|n| n.to_str()).and_then(|n| n.split('.').next());
        let kept = keep_stems.iter().any(|k| k.to_str() == stem);
        let tmp = p.extension().is_some_and(|e| e == "tmp");
        if is_snap && !kept && (include_tmp || !tmp) {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Writes snapshot files on its own thread: built snapshots, and received chunks (two
/// instances, so neither waits for the other).
pub struct SnapshotActor;

impl Actor for SnapshotActor {
    type Context = SyncContext<Self>;
}

/// Stream a state machine view into a new snapshot file.
#[derive(Message)]
#[rtype(result = "Result<SnapshotFile, SmError>")]
pub struct WriteSnapshot {
    pub view: Box<dyn SnapshotSource>,
    pub meta: SnapshotMeta,
    pub dir: PathBuf,
}

struct CrcWriter<W: Write> {
    inner: W,
    crc: u32,
    len: u64,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl Handler<WriteSnapshot> for SnapshotActor {
    type Result = Result<SnapshotFile, SmError>;
    fn handle(&mut self, mut w: WriteSnapshot, _: &mut SyncContext<Self>) -> Self::Result {
        let io = |e: std::io::Error| SmError(format!("writing snapshot: {e}"));
        fs::create_dir_all(&w.dir).map_err(io)?;
        let base = w.dir.join(file_name(&w.meta));
        let tmp = base.with_extension("tmp");
        let file = File::create(&tmp).map_err(io)?;
        let mut out = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: 0, len: 0 };
        w.view.write_to(&mut out)?;
        // Release the view now: it pins old versions in fjall.
        drop(w.view);
        out.flush().map_err(io)?;
        let (crc, len) = (out.crc, out.len);
        let file = out.inner.into_inner().map_err(|e| SmError(format!("flush: {e}")))?;
        file.sync_all().map_err(io)?;
        let path = base.with_extension("snap");
        fs::rename(&tmp, &path).map_err(io)?;
        let snap =
            SnapshotFile { meta: w.meta, path, len, checksum: crc, id: SnapshotId(rand::random()) };
        write_meta_sidecar(&snap).map_err(io)?;
        Ok(snap)
    }
}

/// Copies the snapshot stream in `src` into `dir` as the snapshot `meta` describes (synced,
/// then renamed into place, then its sidecar), the way a build writes one. For
/// `flotilla restore`.
pub(crate) fn copy_snapshot_file(
    src: &Path,
    dir: &Path,
    meta: SnapshotMeta,
) -> std::io::Result<SnapshotFile> {
    fs::create_dir_all(dir)?;
    let base = dir.join(file_name(&meta));
    let tmp = base.with_extension("tmp");
    let mut input = File::open(src)?;
    let mut out =
        CrcWriter { inner: BufWriter::with_capacity(1 << 20, File::create(&tmp)?), crc: 0, len: 0 };
    std::io::copy(&mut input, &mut out)?;
    out.flush()?;
    let (crc, len) = (out.crc, out.len);
    out.inner.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let path = base.with_extension("snap");
    fs::rename(&tmp, &path)?;
    let file = SnapshotFile { meta, path, len, checksum: crc, id: SnapshotId(rand::random()) };
    write_meta_sidecar(&file)?;
    Ok(file)
}

/// Write one received chunk at its offset into `path` (truncating it first when `fresh`);
/// with `finish`, fsync it and move it into place as that snapshot.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct StoreChunk {
    pub path: PathBuf,
    pub fresh: bool,
    pub offset: u64,
    pub data: Bytes,
    pub finish: Option<SnapshotFile>,
}

impl Handler<StoreChunk> for SnapshotActor {
    type Result = Result<(), String>;
    fn handle(&mut self, c: StoreChunk, _: &mut SyncContext<Self>) -> Self::Result {
        let run = || -> std::io::Result<()> {
            if let Some(dir) = c.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut f =
                OpenOptions::new().create(true).write(true).truncate(c.fresh).open(&c.path)?;
            f.seek(SeekFrom::Start(c.offset))?;
            f.write_all(&c.data)?;
            if let Some(done) = &c.finish {
                f.set_len(done.len)?;
                f.sync_all()?;
                drop(f);
                fs::rename(&c.path, &done.path)?;
                write_meta_sidecar(done)?;
            }
            Ok(())
        };
        run().map_err(|e| format!("storing a snapshot chunk in {:?}: {e}", c.path))
    }
}

impl RaftActor {
    /// Every `CHECK_EVERY`: resends stalled chunks, gives up dead transfers, and starts a
    /// snapshot when enough entries were applied since the last one.
    pub(crate) fn maybe_auto_snapshot(&mut self, ctx: &mut Context<Self>) {
        if self.snapshots.last_check.elapsed() < CHECK_EVERY {
            return;
        }
        self.snapshots.last_check = Instant::now();
        self.check_snapshot_sends();
        let every = self.cfg.snapshot_entries;
        let quiet = self.snapshots.retry_at.is_none_or(|t| Instant::now() >= t);
        if every > 0 && quiet && !self.snapshots.building && !self.snapshots.installing {
            let applied = self.shared.applied();
            let base = self.snapshots.last_built_index.max(self.core.snapshot_meta().last_index);
            if applied.0 >= base.0 + every {
                self.build_snapshot(ctx, None);
            }
        }
    }

    /// Builds a snapshot now; `waiter` gets `{"index","term","bytes"}` when it is done.
    pub(crate) fn build_snapshot(
        &mut self,
        ctx: &mut Context<Self>,
        waiter: Option<SnapshotWaiter>,
    ) {
        if let Some(w) = waiter {
            self.snapshots.waiters.push(w);
        }
        // During an install the state machine still holds the state from before the
        // snapshot the core already took on: a view now would describe an index the log no
        // longer has. The waiters wait; the install's end builds for them.
        if self.snapshots.building || self.snapshots.installing {
            return;
        }
        self.snapshots.building = true;
        let started = Instant::now();
        let fut = self.apply.view.send(TakeView);
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            let view = match res {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => fatal(&format!("state machine snapshot failed: {e}")),
                Err(e) => fatal(&format!("apply actor unreachable: {e}")),
            };
            if view.index() == LogIndex::ZERO {
                // Nothing applied yet (not even the leader's first entry): a snapshot would
                // describe an empty state at index 0, which the log already starts from.
                let e = "nothing applied yet to snapshot; retry once the first entry is applied";
                act.finish_snapshot(ctx, Err(ClientError::Invalid(e.into())));
                return;
            }
            let meta = match act.core.snapshot_meta_for(view.index()) {
                Ok(m) => m,
                Err(_) if act.snapshots.installing => {
                    // An install began after the view was asked for (the view is of the
                    // state before it): wait for it, as above.
                    act.snapshots.building = false;
                    return;
                }
                Err(e) => {
                    // Nothing applied yet that a snapshot could describe (or, on a node
                    // that joined, no configuration yet): try again later.
                    act.snapshots.retry_at = Some(Instant::now() + AUTO_RETRY_AFTER);
                    let e = ClientError::Invalid(format!("cannot snapshot: {e}"));
                    act.finish_snapshot(ctx, Err(e));
                    return;
                }
            };
            act.shared.emit("snapshot_started", serde_json::Map::new());
            if meta.last_index <= act.core.snapshot_meta().last_index
                && let Some(cur) = act.snapshots.current.clone()
            {
                // Nothing new since the last snapshot: it is the answer.
                act.finish_snapshot(ctx, Ok(cur));
                return;
            }
            let dir = act.snapshots.dir.clone();
            let Some(writer) = act.snapshots.writer.clone() else {
                act.finish_snapshot(ctx, Err(ClientError::ShuttingDown));
                return;
            };
            let fut = writer.send(WriteSnapshot { view, meta, dir });
            ctx.spawn(fut.into_actor(act).map(move |res, act, ctx| match res {
                Ok(Ok(file)) => act.snapshot_written(file, started, ctx),
                Ok(Err(e)) => fatal(&format!("{e}")),
                Err(e) => fatal(&format!("snapshot actor unreachable: {e}")),
            }));
        }));
    }

    /// True when a built snapshot at `meta` is no longer worth keeping: an install replaced
    /// (or is replacing) the state with a newer one.
    fn built_snapshot_is_stale(&self, meta: &SnapshotMeta) -> bool {
        self.snapshots.installing || meta.last_index <= self.core.snapshot_meta().last_index
    }

    fn discard_built(&mut self, file: &SnapshotFile, ctx: &mut Context<Self>) {
        delete_snapshot(file);
        let answer = match &self.snapshots.current {
            Some(cur) => Ok(cur.clone()),
            None => Err(ClientError::Invalid("a snapshot install replaced this one".into())),
        };
        self.finish_snapshot(ctx, answer);
    }

    fn snapshot_written(&mut self, file: SnapshotFile, started: Instant, ctx: &mut Context<Self>) {
        if self.built_snapshot_is_stale(&file.meta) {
            self.discard_built(&file, ctx);
            return;
        }
        let meta = file.meta.clone();
        let fut = self.log.save_meta.send(SaveSnapshotMeta(meta.clone()));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if !matches!(res, Ok(Ok(()))) {
                fatal("saving snapshot metadata failed");
            }
            if act.built_snapshot_is_stale(&meta) {
                act.discard_built(&file, ctx);
                return;
            }
            act.shared.metrics.snapshots_built.fetch_add(1, Ordering::Relaxed);
            act.snapshots.last_built_index = meta.last_index;
            act.snapshots.current = Some(file.clone());
            if act.snapshots.received.as_ref().is_some_and(|r| r.meta.last_index <= meta.last_index)
            {
                // A received snapshot the core did not install (our log already held it).
                act.snapshots.received = None;
            }
            // Our own build is done and only one runs at a time: no .tmp is being written.
            act.snapshots.clean_up(true);
            act.core.snapshot_built(meta.clone());
            let mut d = serde_json::Map::new();
            d.insert("snapshot_index".into(), json!(meta.last_index.0));
            d.insert("bytes".into(), json!(file.len));
            d.insert("ms".into(), json!(started.elapsed().as_millis() as u64));
            act.shared.emit("snapshot_built", d);
            act.finish_snapshot(ctx, Ok(file));
            act.schedule_flush(ctx);
        }));
    }

    /// An install ended (restored or refused): requests that came during it get a build.
    fn resume_snapshot_waiters(&mut self, ctx: &mut Context<Self>) {
        if !self.snapshots.waiters.is_empty() {
            self.build_snapshot(ctx, None);
        }
    }

    /// Ends a build: answers the waiters its result covers, and starts a follow-up build
    /// for those that asked after its view was taken. An error answers everyone.
    fn finish_snapshot(
        &mut self,
        ctx: &mut Context<Self>,
        result: Result<SnapshotFile, ClientError>,
    ) {
        self.snapshots.building = false;
        let waiters = std::mem::take(&mut self.snapshots.waiters);
        let file = match result {
            Ok(file) => file,
            Err(e) => {
                for w in waiters {
                    let _ = w.tx.send(Err(e.clone()));
                }
                return;
            }
        };
        let (answered, later): (Vec<_>, Vec<_>) =
            waiters.into_iter().partition(|w| w.covers <= file.meta.last_index);
        for w in answered {
            let _ = w.tx.send(Ok(file.json()));
        }
        if !later.is_empty() {
            // The next view is taken after these requests came, so it covers them: they
            // take its answer whatever its index (no second follow-up, never a loop).
            self.snapshots.waiters =
                later.into_iter().map(|w| SnapshotWaiter { covers: LogIndex::ZERO, ..w }).collect();
            self.build_snapshot(ctx, None);
        }
    }

    /// The core asks us to bring `to` up to `meta` by snapshot.
    pub(crate) fn start_snapshot_send(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        _: &mut Context<Self>,
    ) {
        if let Some(s) = self.snapshots.sends.get(&to) {
            // The core offers a snapshot again after its own timeout or after a probe;
            // a transfer that is still moving goes on (a newer snapshot would start over).
            let moving = s.last_progress.elapsed() < CHUNK_RESEND_AFTER * 2;
            if s.file.meta.last_index == meta.last_index || moving {
                return;
            }
        }
        let Some(file) =
            self.snapshots.current.clone().filter(|f| f.meta.last_index == meta.last_index)
        else {
            tracing::warn!(peer = %to, index = %meta.last_index, "no snapshot file to send");
            self.core.snapshot_send_failed(to);
            return;
        };
        let fd = match File::open(&file.path) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, path = ?file.path, "opening the snapshot to send failed");
                self.core.snapshot_send_failed(to);
                return;
            }
        };
        let mut d = serde_json::Map::new();
        d.insert("to".into(), json!(to.0));
        d.insert("snapshot_index".into(), json!(meta.last_index.0));
        d.insert("bytes".into(), json!(file.len));
        self.shared.emit("snapshot_send_started", d);
        let now = Instant::now();
        let s = Sending {
            file,
            fd,
            next_offset: 0,
            started: now,
            last_progress: now,
            last_sent: now,
            bytes_sent: 0,
            resumes: 0,
        };
        self.snapshots.sends.insert(to, s);
        self.send_chunk(to);
    }

    fn send_chunk(&mut self, to: NodeId) {
        let Some(s) = self.snapshots.sends.get_mut(&to) else { return };
        let n = CHUNK_BYTES.min((s.file.len - s.next_offset) as usize);
        let mut data = vec![0u8; n];
        if let Err(e) = s.fd.read_exact_at(&mut data, s.next_offset) {
            tracing::warn!(error = %e, "reading snapshot file failed");
            self.snapshots.sends.remove(&to);
            self.core.snapshot_send_failed(to);
            return;
        }
        s.last_sent = Instant::now();
        s.bytes_sent += n as u64;
        let last = s.next_offset + n as u64 == s.file.len;
        let chunk = SnapshotChunk {
            term: self.core.term(),
            from: self.cfg.id,
            snapshot_id: s.file.id,
            meta: s.file.meta.clone(),
            offset: s.next_offset,
            total_len: s.file.len,
            checksum: s.file.checksum,
            data: Bytes::from(data),
            last,
        };
        self.shared.metrics.snapshot_bytes_sent.fetch_add(n as u64, Ordering::Relaxed);
        self.send_wire(to, WireMessage::SnapshotChunk(chunk));
    }

    /// Resends stalled chunks from the last acknowledged offset (the resume after a lost
    /// message or a reconnect) and gives up on dead transfers.
    fn check_snapshot_sends(&mut self) {
        let now = Instant::now();
        let leader = self.core.role() == flotilla_raft::Role::Leader;
        let mut resend = Vec::new();
        let mut give_up = Vec::new();
        for (id, s) in &self.snapshots.sends {
            if !leader || now.duration_since(s.last_progress) >= TRANSFER_GIVE_UP_AFTER {
                give_up.push(*id);
            } else if now.duration_since(s.last_sent) >= CHUNK_RESEND_AFTER {
                resend.push(*id);
            }
        }
        for id in give_up {
            if let Some(s) = self.snapshots.sends.remove(&id) {
                let mut d = serde_json::Map::new();
                d.insert("to".into(), json!(id.0));
                d.insert("offset".into(), json!(s.next_offset));
                self.shared.emit("snapshot_send_abandoned", d);
            }
            self.core.snapshot_send_failed(id);
        }
        for id in resend {
            if let Some(s) = self.snapshots.sends.get_mut(&id) {
                s.resumes += 1;
                let mut d = serde_json::Map::new();
                d.insert("to".into(), json!(id.0));
                d.insert("offset".into(), json!(s.next_offset));
                d.insert("bytes".into(), json!(s.file.len));
                self.shared.emit("snapshot_send_resumed", d);
            }
            self.send_chunk(id);
        }
    }

    pub(crate) fn on_snapshot_ack(
        &mut self,
        from: NodeId,
        ack: SnapshotAck,
        _: &mut Context<Self>,
    ) {
        let Some(s) = self.snapshots.sends.get_mut(&from) else { return };
        if ack.snapshot_id != s.file.id {
            return;
        }
        let next = if let Some(err) = &ack.error {
            tracing::warn!(peer = %from, error = %err, "follower rejected snapshot; restarting it");
            0
        } else {
            ack.next_offset.min(s.file.len)
        };
        if next >= s.file.len {
            // Complete: the follower's core answers with InstallSnapshotResponse.
            let mut d = serde_json::Map::new();
            d.insert("to".into(), json!(from.0));
            d.insert("snapshot_index".into(), json!(s.file.meta.last_index.0));
            d.insert("bytes".into(), json!(s.file.len));
            d.insert("bytes_sent".into(), json!(s.bytes_sent));
            d.insert("resumes".into(), json!(s.resumes));
            d.insert("ms".into(), json!(s.started.elapsed().as_millis() as u64));
            self.shared.emit("snapshot_send_done", d);
            let index = s.file.meta.last_index;
            self.snapshots.sends.remove(&from);
            // The follower acked the last chunk after its core took the snapshot: from
            // now on an answer from it that lacks the snapshot means it lost it.
            self.core.snapshot_delivered(from, index);
            return;
        }
        if next == s.next_offset && ack.error.is_none() {
            // The receiver wants the chunk that is in flight (a duplicate's answer): the
            // resend timer covers its loss. Answering would put a second chunk in flight.
            return;
        }
        if next > s.next_offset || ack.error.is_some() {
            s.last_progress = Instant::now();
        }
        s.next_offset = next;
        self.send_chunk(from);
    }

    pub(crate) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        ctx: &mut Context<Self>,
    ) {
        if chunk.term < self.core.term() || self.snapshots.installing {
            // A deposed leader's, or we are busy installing: the sender retries.
            return;
        }
        let verdict = self.snapshots.receiver.on_chunk(&chunk);
        let ack = verdict.ack().clone();
        let (fresh, finish) = match &verdict {
            ChunkVerdict::Store { fresh, .. } => (*fresh, None),
            ChunkVerdict::Complete { meta, fresh, .. } => {
                let file = SnapshotFile {
                    path: self.snapshots.dir.join(file_name(meta)).with_extension("snap"),
                    meta: meta.clone(),
                    len: chunk.total_len,
                    checksum: chunk.checksum,
                    id: chunk.snapshot_id,
                };
                (*fresh, Some(file))
            }
            ChunkVerdict::Skip { .. } | ChunkVerdict::Reject { .. } => {
                self.send_wire(from, WireMessage::SnapshotAck(ack));
                return;
            }
        };
        if fresh {
            self.snapshots.receiving = Some(Receiving {
                from,
                id: chunk.snapshot_id,
                total_len: chunk.total_len,
                offset: 0,
                started: Instant::now(),
            });
            let mut d = serde_json::Map::new();
            d.insert("from".into(), json!(from.0));
            d.insert("snapshot_index".into(), json!(chunk.meta.last_index.0));
            d.insert("bytes".into(), json!(chunk.total_len));
            self.shared.emit("snapshot_receive_started", d);
        }
        let Some(io) = self.snapshots.io.clone() else { return };
        let store = StoreChunk {
            path: self.snapshots.incoming_path(),
            fresh,
            offset: chunk.offset,
            data: chunk.data.clone(),
            finish: finish.clone(),
        };
        let (term, id) = (chunk.term, chunk.snapshot_id);
        ctx.spawn(io.send(store).into_actor(self).map(move |res, act, ctx| {
            let stored = match res {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = stored {
                // Start over: the sender's next chunk is answered with offset 0.
                tracing::warn!(error = %e, "storing a snapshot chunk failed");
                act.snapshots.receiver.reset();
                act.snapshots.receiving = None;
                return;
            }
            if let Some(r) = act.snapshots.receiving.as_mut().filter(|r| r.id == id) {
                r.offset = ack.next_offset;
            }
            if let Some(file) = finish {
                act.snapshot_received(from, term, file);
            }
            act.send_wire(from, WireMessage::SnapshotAck(ack));
            act.schedule_flush(ctx);
        }));
    }

    /// A whole snapshot arrived, checksum verified, and is in place on disk: offer it to
    /// the core, which decides whether to install it.
    fn snapshot_received(&mut self, from: NodeId, term: flotilla_raft::Term, file: SnapshotFile) {
        let meta = file.meta.clone();
        let mut d = serde_json::Map::new();
        d.insert("from".into(), json!(from.0));
        d.insert("snapshot_index".into(), json!(meta.last_index.0));
        d.insert("bytes".into(), json!(file.len));
        if let Some(r) = self.snapshots.receiving.take() {
            d.insert("ms".into(), json!(r.started.elapsed().as_millis() as u64));
        }
        self.shared.emit("snapshot_received", d);
        let path = file.path.clone();
        if let Some(old) = self.snapshots.received.replace(file)
            && old.path != path
            && self.snapshots.current.as_ref().is_none_or(|c| c.path != old.path)
        {
            delete_snapshot(&old);
        }
        self.core.step(Message {
            from,
            to: self.cfg.id,
            term,
            body: MessageBody::InstallSnapshot { meta },
        });
    }

    /// The state machine refused a received snapshot that had passed its checksum (a
    /// stream it cannot read, from a leader with another state machine version, say). The
    /// state machine keeps its old state (`StateMachine::restore` must leave it as it was
    /// on error), so the node goes on as a follower that is behind: the file is deleted,
    /// the core stops waiting for the install, and the leader offers a snapshot again
    /// once the follower's next heartbeat answer shows it does not hold one (at most once
    /// per snapshot timeout). Stopping the node instead would hand a peer's bad stream the
    /// power to take it down, again at every restart.
    fn snapshot_install_failed(&mut self, file: &SnapshotFile, error: &str, started: Instant) {
        tracing::error!(snapshot = ?file.path, %error, "installing a received snapshot failed; \
                        the state machine keeps its state and the leader will offer one again");
        self.snapshots.installing = false;
        if self.snapshots.received.as_ref().is_some_and(|r| r.path == file.path) {
            self.snapshots.received = None;
        }
        if self.snapshots.current.as_ref().is_none_or(|c| c.path != file.path) {
            delete_snapshot(file);
        }
        self.shared.metrics.snapshot_installs_failed.fetch_add(1, Ordering::Relaxed);
        self.core.snapshot_install_failed(file.meta.clone());
        let mut d = serde_json::Map::new();
        d.insert("snapshot_index".into(), json!(file.meta.last_index.0));
        d.insert("error".into(), json!(error));
        d.insert("ms".into(), json!(started.elapsed().as_millis() as u64));
        self.shared.emit("snapshot_install_failed", d);
    }

    /// The core accepted a received snapshot: restore the state machine from it, reset the
    /// log, then tell the core.
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta, ctx: &mut Context<Self>) {
        let held = self.snapshots.received.clone().filter(|f| f.meta == meta);
        let Some(file) = held
            .or_else(|| list_snapshots(&self.snapshots.dir).into_iter().find(|f| f.meta == meta))
        else {
            // The core waits for `snapshot_installed`; without the file that would wedge
            // this node. It cannot happen (the core is only told after the file is in
            // place), so stop and let recovery sort it out.
            fatal(&format!(
                "asked to install snapshot {} that this node does not hold",
                meta.last_index
            ));
        };
        self.snapshots.installing = true;
        let started = Instant::now();
        let mut d = serde_json::Map::new();
        d.insert("snapshot_index".into(), json!(meta.last_index.0));
        self.shared.emit("snapshot_install_started", d);
        let fut = self.apply.restore.send(Restore { meta: meta.clone(), path: file.path.clone() });
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            match res {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    act.snapshot_install_failed(&file, &e.to_string(), started);
                    act.resume_snapshot_waiters(ctx);
                    act.schedule_flush(ctx);
                    return;
                }
                Err(e) => fatal(&format!("apply actor unreachable: {e}")),
            }
            let fut = act.log.reset.send(ResetToSnapshot(meta.clone()));
            ctx.spawn(fut.into_actor(act).map(move |res, act, ctx| {
                if !matches!(res, Ok(Ok(()))) {
                    fatal("resetting the log to the snapshot failed");
                }
                act.snapshots.installing = false;
                act.snapshots.current = Some(file.clone());
                if act.snapshots.received.as_ref().is_some_and(|r| r.path == file.path) {
                    act.snapshots.received = None;
                }
                act.snapshots.clean_up(!act.snapshots.building);
                act.shared.metrics.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                act.snapshots.last_built_index = meta.last_index;
                act.core.snapshot_installed(meta.clone());
                let mut d = serde_json::Map::new();
                d.insert("snapshot_index".into(), json!(meta.last_index.0));
                d.insert("bytes".into(), json!(file.len));
                d.insert("ms".into(), json!(started.elapsed().as_millis() as u64));
                act.shared.emit("snapshot_restored", d);
                act.resume_snapshot_waiters(ctx);
                act.schedule_flush(ctx);
            }));
        }));
    }
}
