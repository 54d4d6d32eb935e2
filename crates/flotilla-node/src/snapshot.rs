//! Snapshots in the running node: building them in the background from the state
//! machine's copy-on-write view (`SnapshotActor`, its own thread), streaming them to
//! followers in chunks with resume, and installing a received one.
//!
//! Files live in `DATA_DIR/snapshots/`: `snap-<index>-<term>.snap` (+ `.meta`, JSON). A
//! snapshot is written to a `.tmp` file, fsync'd, then renamed, so a crash in the middle
//! leaves the previous snapshot usable; older snapshots are deleted after a new one lands.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::Bytes;
use flotilla_raft::{LogIndex, Message, MessageBody, NodeId, SnapshotMeta};
use flotilla_wire::snapshot::ChunkVerdict;
use flotilla_wire::{SnapshotAck, SnapshotChunk, SnapshotId, SnapshotReceiver, WireMessage};
use serde_json::json;
use tokio::sync::oneshot;

use crate::api::{ClientError, SmError, SnapshotSource};
use crate::apply_actor::{Restore, TakeView};
use crate::log_actor::{ResetToSnapshot, SaveSnapshotMeta};
use crate::raft_actor::{RaftActor, fatal};

/// Bytes per snapshot chunk: small enough that heartbeats never wait long behind one.
const CHUNK_BYTES: usize = 256 * 1024;
/// Resend the current chunk when the follower has not answered for this long.
const CHUNK_RESEND_AFTER: Duration = Duration::from_secs(2);
/// Give up on a transfer that made no progress for this long (the core offers it again).
const TRANSFER_GIVE_UP_AFTER: Duration = Duration::from_secs(20);

/// A snapshot on disk.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub path: PathBuf,
    pub len: u64,
    pub checksum: u32,
    pub id: SnapshotId,
}

struct Sending {
    file: SnapshotFile,
    next_offset: u64,
    last_progress: Instant,
    last_sent: Instant,
}

pub struct SnapshotState {
    pub dir: PathBuf,
    pub building: bool,
    pub current: Option<SnapshotFile>,
    sends: BTreeMap<NodeId, Sending>,
    receiver: SnapshotReceiver,
    receiving_from: Option<NodeId>,
    last_built_index: LogIndex,
    waiters: Vec<oneshot::Sender<Result<serde_json::Value, ClientError>>>,
    last_check: Instant,
    /// The thread that writes snapshot files.
    pub writer: Option<Addr<SnapshotActor>>,
}

impl SnapshotState {
    pub fn new(dir: PathBuf) -> SnapshotState {
        SnapshotState {
            dir,
            building: false,
            current: None,
            sends: BTreeMap::new(),
            receiver: SnapshotReceiver::new(),
            receiving_from: None,
            last_built_index: LogIndex::ZERO,
            waiters: Vec::new(),
            last_check: Instant::now(),
            writer: None,
        }
    }

    fn incoming_path(&self) -> PathBuf {
        self.dir.join("incoming.tmp")
    }
}

fn file_name(meta: &SnapshotMeta) -> String {
    format!("snap-{:020}-{:020}", meta.last_index.0, meta.last_term.0)
}

/// Finds the newest complete snapshot in `dir` (ignoring partial `.tmp` files).
pub fn latest_snapshot(dir: &Path) -> Option<SnapshotFile> {
    let mut best: Option<SnapshotFile> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else { continue };
        let Some(meta) =
            v.get("meta").and_then(|m| serde_json::from_value::<SnapshotMeta>(m.clone()).ok())
        else {
            continue;
        };
        let data = path.with_extension("snap");
        let Ok(md) = fs::metadata(&data) else { continue };
        let checksum = v.get("checksum").and_then(|c| c.as_u64()).unwrap_or(0) as u32;
        let len = v.get("len").and_then(|c| c.as_u64()).unwrap_or(u64::MAX);
        if md.len() != len {
            continue;
        }
        let id = SnapshotId(v.get("id").and_then(|c| c.as_u64()).unwrap_or(0));
        if best.as_ref().is_none_or(|b| b.meta.last_index < meta.last_index) {
            best = Some(SnapshotFile { meta, path: data, len, checksum, id });
        }
    }
    best
}

fn write_meta_sidecar(file: &SnapshotFile) -> std::io::Result<()> {
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
    if let Some(dir) = side.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Deletes every snapshot in `dir` other than `keep`.
fn remove_others(dir: &Path, keep: &Path) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    let keep_stem = keep.file_stem().map(|s| s.to_owned());
    for entry in rd.flatten() {
        let p = entry.path();
        let is_snap =
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snap-"));
        if is_snap && p.file_stem().map(|s| s.to_owned()) != keep_stem {
            let _ = fs::remove_file(&p);
        }
    }
}

/// Writes snapshots on its own thread.
pub struct SnapshotActor;

impl Actor for SnapshotActor {
    type Context = SyncContext<Self>;
}

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
        let mut out = CrcWriter { inner: BufWriter::new(file), crc: 0, len: 0 };
        w.view.write_to(&mut out)?;
        out.flush().map_err(io)?;
        let (crc, len) = (out.crc, out.len);
        let file = out.inner.into_inner().map_err(|e| SmError(format!("flush: {e}")))?;
        file.sync_all().map_err(io)?;
        let path = base.with_extension("snap");
        fs::rename(&tmp, &path).map_err(io)?;
        let snap =
            SnapshotFile { meta: w.meta, path, len, checksum: crc, id: SnapshotId(rand::random()) };
        write_meta_sidecar(&snap).map_err(io)?;
        remove_others(&w.dir, &snap.path);
        Ok(snap)
    }
}

impl RaftActor {
    /// Triggers a snapshot when enough entries were applied since the last one.
    pub(crate) fn maybe_auto_snapshot(&mut self, ctx: &mut Context<Self>) {
        let every = self.cfg.snapshot_entries;
        if self.snapshots.last_check.elapsed() >= Duration::from_millis(200) {
            self.snapshots.last_check = Instant::now();
            self.check_snapshot_sends();
            if every > 0 && !self.snapshots.building {
                let applied = self.shared.applied();
                let base =
                    self.snapshots.last_built_index.max(self.core.snapshot_meta().last_index);
                if applied.0 >= base.0 + every {
                    self.build_snapshot(ctx, None);
                }
            }
        }
    }

    /// Builds a snapshot now; `waiter` gets `{"index","term","bytes"}` when it is done.
    pub(crate) fn build_snapshot(
        &mut self,
        ctx: &mut Context<Self>,
        waiter: Option<oneshot::Sender<Result<serde_json::Value, ClientError>>>,
    ) {
        if let Some(w) = waiter {
            self.snapshots.waiters.push(w);
        }
        if self.snapshots.building {
            return;
        }
        self.snapshots.building = true;
        self.shared.emit("snapshot_started", serde_json::Map::new());
        let fut = self.apply.send(TakeView);
        ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            let view = match res {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => fatal(&format!("state machine snapshot failed: {e}")),
                Err(e) => fatal(&format!("apply actor unreachable: {e}")),
            };
            let meta = match act.core.snapshot_meta_for(view.index()) {
                Ok(m) => m,
                Err(e) => {
                    act.finish_snapshot(Err(ClientError::Invalid(e.to_string())));
                    return;
                }
            };
            let dir = act.snapshots.dir.clone();
            let Some(writer) = act.snapshots.writer.clone() else {
                act.finish_snapshot(Err(ClientError::ShuttingDown));
                return;
            };
            let fut = writer.send(WriteSnapshot { view, meta, dir });
            ctx.spawn(fut.into_actor(act).map(|res, act, ctx| match res {
                Ok(Ok(file)) => act.snapshot_written(file, ctx),
                Ok(Err(e)) => fatal(&format!("{e}")),
                Err(e) => fatal(&format!("snapshot actor unreachable: {e}")),
            }));
        }));
    }

    fn snapshot_written(&mut self, file: SnapshotFile, ctx: &mut Context<Self>) {
        let meta = file.meta.clone();
        let fut = self.log.send(SaveSnapshotMeta(meta.clone()));
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if !matches!(res, Ok(Ok(()))) {
                fatal("saving snapshot metadata failed");
            }
            act.shared.metrics.snapshots_built.fetch_add(1, Ordering::Relaxed);
            act.snapshots.last_built_index = meta.last_index;
            act.snapshots.current = Some(file.clone());
            act.core.snapshot_built(meta.clone());
            let mut d = serde_json::Map::new();
            d.insert("snapshot_index".into(), json!(meta.last_index.0));
            d.insert("bytes".into(), json!(file.len));
            act.shared.emit("snapshot_built", d);
            let body =
                json!({"index": meta.last_index.0, "term": meta.last_term.0, "bytes": file.len});
            act.finish_snapshot(Ok(body));
            act.schedule_flush(ctx);
        }));
    }

    fn finish_snapshot(&mut self, result: Result<serde_json::Value, ClientError>) {
        self.snapshots.building = false;
        for w in self.snapshots.waiters.drain(..) {
            let _ = w.send(result.clone());
        }
    }

    /// The core asks us to bring `to` up to `meta` by snapshot.
    pub(crate) fn start_snapshot_send(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        _: &mut Context<Self>,
    ) {
        let Some(file) =
            self.snapshots.current.clone().filter(|f| f.meta.last_index == meta.last_index)
        else {
            self.core.snapshot_send_failed(to);
            return;
        };
        let mut d = serde_json::Map::new();
        d.insert("to".into(), json!(to.0));
        d.insert("snapshot_index".into(), json!(meta.last_index.0));
        d.insert("bytes".into(), json!(file.len));
        self.shared.emit("snapshot_send_started", d);
        let now = Instant::now();
        self.snapshots
            .sends
            .insert(to, Sending { file, next_offset: 0, last_progress: now, last_sent: now });
        self.send_chunk(to);
    }

    fn send_chunk(&mut self, to: NodeId) {
        let Some(s) = self.snapshots.sends.get_mut(&to) else { return };
        let mut data = vec![0u8; CHUNK_BYTES.min((s.file.len - s.next_offset) as usize)];
        let read = File::open(&s.file.path).and_then(|mut f| {
            f.seek(SeekFrom::Start(s.next_offset))?;
            f.read_exact(&mut data)
        });
        if let Err(e) = read {
            tracing::warn!(error = %e, "reading snapshot file failed");
            self.snapshots.sends.remove(&to);
            self.core.snapshot_send_failed(to);
            return;
        }
        s.last_sent = Instant::now();
        let last = s.next_offset + data.len() as u64 == s.file.len;
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
        self.send_wire(to, WireMessage::SnapshotChunk(chunk));
    }

    /// Resends stalled chunks (resume after a reconnect) and gives up on dead transfers.
    fn check_snapshot_sends(&mut self) {
        let now = Instant::now();
        let mut resend = Vec::new();
        let mut give_up = Vec::new();
        for (id, s) in &self.snapshots.sends {
            if now.duration_since(s.last_progress) >= TRANSFER_GIVE_UP_AFTER {
                give_up.push(*id);
            } else if now.duration_since(s.last_sent) >= CHUNK_RESEND_AFTER {
                resend.push(*id);
            }
        }
        for id in give_up {
            self.snapshots.sends.remove(&id);
            self.core.snapshot_send_failed(id);
        }
        for id in resend {
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
        if let Some(err) = &ack.error {
            tracing::warn!(peer = %from, error = %err, "follower rejected snapshot; restarting it");
        }
        if ack.next_offset > s.next_offset || ack.error.is_some() {
            s.last_progress = Instant::now();
        }
        s.next_offset = ack.next_offset.min(s.file.len);
        if s.next_offset >= s.file.len {
            // Complete: the follower's core answers with InstallSnapshotResponse.
            self.snapshots.sends.remove(&from);
            return;
        }
        self.send_chunk(from);
    }

    pub(crate) fn on_snapshot_chunk(
        &mut self,
        from: NodeId,
        chunk: SnapshotChunk,
        _: &mut Context<Self>,
    ) {
        if chunk.term < self.core.term() {
            return;
        }
        let verdict = self.snapshots.receiver.on_chunk(&chunk);
        let path = self.snapshots.incoming_path();
        let store = |fresh: bool, chunk: &SnapshotChunk| -> std::io::Result<()> {
            fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
            let mut f = OpenOptions::new().create(true).write(true).truncate(fresh).open(&path)?;
            f.seek(SeekFrom::Start(chunk.offset))?;
            f.write_all(&chunk.data)?;
            if chunk.last {
                f.sync_all()?;
            }
            Ok(())
        };
        let ack = verdict.ack().clone();
        match verdict {
            ChunkVerdict::Store { fresh, .. } => {
                self.snapshots.receiving_from = Some(from);
                if let Err(e) = store(fresh, &chunk) {
                    tracing::warn!(error = %e, "storing snapshot chunk failed");
                    self.snapshots.receiver.reset();
                    return;
                }
            }
            ChunkVerdict::Complete { meta, fresh, .. } => {
                if let Err(e) = store(fresh, &chunk) {
                    tracing::warn!(error = %e, "storing snapshot chunk failed");
                    self.snapshots.receiver.reset();
                    return;
                }
                let file = SnapshotFile {
                    path: self.snapshots.dir.join(file_name(&meta)).with_extension("snap"),
                    meta: meta.clone(),
                    len: chunk.total_len,
                    checksum: chunk.checksum,
                    id: chunk.snapshot_id,
                };
                if let Err(e) =
                    fs::rename(&path, &file.path).and_then(|_| write_meta_sidecar(&file))
                {
                    tracing::warn!(error = %e, "keeping received snapshot failed");
                    return;
                }
                self.snapshots.current = Some(file);
                let mut d = serde_json::Map::new();
                d.insert("from".into(), json!(from.0));
                d.insert("snapshot_index".into(), json!(meta.last_index.0));
                self.shared.emit("snapshot_received", d);
                self.core.step(Message {
                    from,
                    to: self.cfg.id,
                    term: chunk.term,
                    body: MessageBody::InstallSnapshot { meta },
                });
            }
            ChunkVerdict::Skip { .. } | ChunkVerdict::Reject { .. } => {}
        }
        self.send_wire(from, WireMessage::SnapshotAck(ack));
    }

    /// The core accepted a received snapshot: restore the state machine from it, reset the
    /// log, then tell the core.
    pub(crate) fn install_snapshot(&mut self, meta: SnapshotMeta, ctx: &mut Context<Self>) {
        let Some(file) = self.snapshots.current.clone().filter(|f| f.meta == meta) else {
            tracing::warn!("asked to install a snapshot we do not hold");
            return;
        };
        let fut = self.apply.send(Restore { meta: meta.clone(), path: file.path.clone() });
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            if !matches!(res, Ok(Ok(_))) {
                fatal(&format!("restoring the state machine from {:?} failed", file.path));
            }
            let fut = act.log.send(ResetToSnapshot(meta.clone()));
            ctx.spawn(fut.into_actor(act).map(move |res, act, ctx| {
                if !matches!(res, Ok(Ok(()))) {
                    fatal("resetting the log to the snapshot failed");
                }
                remove_others(&act.snapshots.dir, &file.path);
                act.shared.metrics.snapshots_installed.fetch_add(1, Ordering::Relaxed);
                act.snapshots.last_built_index = meta.last_index;
                act.core.snapshot_installed(meta.clone());
                let mut d = serde_json::Map::new();
                d.insert("snapshot_index".into(), json!(meta.last_index.0));
                act.shared.emit("snapshot_restored", d);
                act.schedule_flush(ctx);
            }));
        }));
    }
}
