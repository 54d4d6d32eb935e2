//! An app that embeds the Flotilla node with its own state machine: a replicated counter.
//!
//! Run three of these (each in its own terminal):
//!
//! ```sh
//! SPEC=1=127.0.0.1:7201@127.0.0.1:8201,2=127.0.0.1:7202@127.0.0.1:8202,3=127.0.0.1:7203@127.0.0.1:8203
//! cargo run -p flotilla-node --example counter -- 1 /tmp/counter-1 $SPEC
//! cargo run -p flotilla-node --example counter -- 2 /tmp/counter-2 $SPEC
//! cargo run -p flotilla-node --example counter -- 3 /tmp/counter-3 $SPEC
//! curl -X POST 'http://127.0.0.1:8201/counter/add?n=5'   # on the leader; followers redirect
//! curl http://127.0.0.1:8202/counter?consistency=stale
//! ```
//!
//! Everything Raft is the node's: the example only says how to apply an `add`, how to
//! snapshot and restore the total, and which HTTP routes it serves. `/v1/status`,
//! `/v1/events`, `/metrics` and the admin routes come with the node.

use std::io::{Read, Write};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use bytes::Bytes;
use fjall::{Keyspace, PersistMode};
use flotilla_log::{FjallLogStore, Identity};
use flotilla_node::http::{NodeRoutes, client_error_response};
use flotilla_node::{
    ClientApi, NodeConfig, NodeHandle, ReadConsistency, SmError, SnapshotSource, StateMachine,
};
use flotilla_raft::{Entry, EntryPayload, LogIndex, NodeId, SnapshotMeta};

const TOTAL: &[u8] = b"total";
const APPLIED: &[u8] = b"applied";

/// The counter lives in its own keyspace of the node's fjall database, so each batch of
/// adds and its applied index commit together.
struct Counter {
    db: fjall::Database,
    ks: Keyspace,
    total: i64,
    applied: LogIndex,
}

fn sm_err(e: impl std::fmt::Display) -> SmError {
    SmError(e.to_string())
}

impl Counter {
    fn open(store: &FjallLogStore) -> Result<Counter, SmError> {
        let ks = store.state_machine_keyspace("counter").map_err(sm_err)?;
        let read = |k: &[u8]| -> Result<u64, SmError> {
            Ok(ks
                .get(k)
                .map_err(sm_err)?
                .map_or(0, |v| u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]))))
        };
        let total = read(TOTAL)? as i64;
        let applied = LogIndex(read(APPLIED)?);
        Ok(Counter { db: store.database().clone(), ks, total, applied })
    }

    fn save(&self) -> Result<(), SmError> {
        let mut b = self.db.batch();
        b.insert(&self.ks, TOTAL, (self.total as u64).to_be_bytes());
        b.insert(&self.ks, APPLIED, self.applied.0.to_be_bytes());
        b.commit().map_err(sm_err)
    }
}

impl StateMachine for Counter {
    fn applied_index(&self) -> LogIndex {
        self.applied
    }

    fn apply(&mut self, entries: &[Entry]) -> Result<Vec<Option<Bytes>>, SmError> {
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            if e.index <= self.applied {
                out.push(None);
                continue;
            }
            self.applied = e.index;
            match &e.payload {
                EntryPayload::Command(data) => {
                    let n = std::str::from_utf8(data).ok().and_then(|s| s.parse::<i64>().ok());
                    self.total = self.total.saturating_add(n.unwrap_or(0));
                    out.push(Some(Bytes::from(self.total.to_string())));
                }
                _ => out.push(None),
            }
        }
        self.save()?;
        Ok(out)
    }

    fn snapshot(&mut self) -> Result<Box<dyn SnapshotSource>, SmError> {
        Ok(Box::new(CounterSnapshot { total: self.total, index: self.applied }))
    }

    fn restore(&mut self, meta: &SnapshotMeta, reader: &mut dyn Read) -> Result<(), SmError> {
        let mut s = String::new();
        reader.read_to_string(&mut s).map_err(sm_err)?;
        self.total = s.trim().parse().map_err(sm_err)?;
        self.applied = meta.last_index;
        self.save()?;
        self.db.persist(PersistMode::SyncAll).map_err(sm_err)
    }
}

struct CounterSnapshot {
    total: i64,
    index: LogIndex,
}

impl SnapshotSource for CounterSnapshot {
    fn index(&self) -> LogIndex {
        self.index
    }
    fn write_to(&mut self, out: &mut dyn Write) -> Result<(), SmError> {
        write!(out, "{}", self.total).map_err(sm_err)
    }
}

async fn add(
    req: HttpRequest,
    node: web::Data<NodeHandle>,
    q: web::Query<AddQuery>,
) -> HttpResponse {
    match node.propose(Bytes::from(q.n.to_string())).await {
        Ok(applied) => HttpResponse::Ok().json(serde_json::json!({
            "total": String::from_utf8_lossy(&applied.response), "index": applied.index.0,
        })),
        Err(e) => client_error_response(&req, &e),
    }
}

async fn get(
    req: HttpRequest,
    node: web::Data<NodeHandle>,
    ks: web::Data<Keyspace>,
    q: web::Query<GetQuery>,
) -> HttpResponse {
    let consistency = match q.consistency.as_deref() {
        Some("stale") => ReadConsistency::Stale,
        _ => ReadConsistency::Linearizable,
    };
    match node.read_barrier(consistency).await {
        // Everything up to `index` is applied: the stored total is at least that fresh.
        Ok(index) => {
            let total =
                ks.get(TOTAL).ok().flatten().map_or(0, |v| {
                    u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8])) as i64
                });
            HttpResponse::Ok().json(serde_json::json!({"applied_index": index.0, "total": total}))
        }
        Err(e) => client_error_response(&req, &e),
    }
}

#[derive(serde::Deserialize)]
struct AddQuery {
    n: i64,
}

#[derive(serde::Deserialize)]
struct GetQuery {
    consistency: Option<String>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: counter ID DATA_DIR ID=RAFT@API,...");
        std::process::exit(2);
    }
    let id = NodeId(args[1].parse()?);
    let cluster = NodeConfig::parse_initial_cluster(&args[3])?;
    let me =
        cluster.iter().find(|(i, _)| *i == id).ok_or("ID is not in the cluster spec")?.1.clone();
    let cfg = NodeConfig {
        id,
        data_dir: args[2].clone().into(),
        listen: me.raft_addr.clone(),
        api: me.api_addr.clone(),
        advertise_peer: me.raft_addr.clone(),
        advertise_api: me.api_addr.clone(),
        forward: flotilla_node::ForwardMode::Never,
        initial_cluster: cluster,
        join: None,
        cluster_id: "counter".into(),
        cluster_secret: None,
        election_timeout_ms: (150, 300),
        heartbeat_ms: 50,
        tick_ms: 10,
        enable_fault_injection: false,
        admin_token: None,
        snapshot_entries: 1000,
        request_timeout: Duration::from_secs(5),
        tls: None,
    };
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = FjallLogStore::open(
        cfg.data_dir.join("db"),
        Identity { cluster_id: "counter".into(), node_id: id },
    )?;
    let counter = Counter::open(&store)?;
    let reader = counter.ks.clone();
    actix::System::new().block_on(async move {
        let node =
            flotilla_node::start_node(cfg.clone(), Box::new(store), Box::new(counter)).await?;
        let routes = NodeRoutes { handle: node.clone(), fault_injection: false, admin_token: None };
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(node.clone()))
                .app_data(web::Data::new(reader.clone()))
                .configure(|c| flotilla_node::http::configure(c, routes.clone()))
                .route("/counter/add", web::post().to(add))
                .route("/counter", web::get().to(get))
        })
        .workers(1)
        .bind(&cfg.api)?
        .run()
        .await?;
        Ok(())
    })
}
