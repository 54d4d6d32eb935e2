//! The etcd side of the bench: etcd's native gRPC API (etcdserverpb.KV/Put, KV/Range,
//! Maintenance/Status) over HTTP/2 with `tonic`. The few messages needed are declared here
//! with `prost` derives (field numbers from etcd's rpc.proto and kv.proto), so the build
//! needs no `protoc` and no generated code; on the wire it is the same gRPC any etcd client
//! speaks, and HTTP/2 multiplexes every client's requests over `--etcd-conns` connections.

use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use tonic::client::Grpc;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};
use tonic_prost::ProstCodec;

use super::http::OpError;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    #[prost(int64, tag = "3")]
    pub revision: i64,
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// false: a linearizable read (etcd's default).
    #[prost(bool, tag = "7")]
    pub serializable: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    #[prost(int64, tag = "4")]
    pub count: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StatusResponse {
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    #[prost(int64, tag = "3")]
    pub db_size: i64,
    #[prost(uint64, tag = "4")]
    pub leader: u64,
    #[prost(uint64, tag = "5")]
    pub raft_index: u64,
    #[prost(uint64, tag = "6")]
    pub raft_term: u64,
}

const PUT: &str = "/etcdserverpb.KV/Put";
const RANGE: &str = "/etcdserverpb.KV/Range";
const STATUS: &str = "/etcdserverpb.Maintenance/Status";

/// A channel to one etcd member; cheap to clone (clones share the HTTP/2 connection).
#[derive(Clone)]
pub struct EtcdConn {
    grpc: Grpc<Channel>,
    timeout: Duration,
}

pub async fn channel(addr: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(2));
    ep.connect().await.with_context(|| format!("connecting to etcd at {addr}"))
}

/// A channel that connects on first use (for members that may be down).
pub fn lazy_channel(addr: &str) -> Result<Channel> {
    let ep = Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_millis(500));
    Ok(ep.connect_lazy())
}

fn status_error(s: tonic::Status) -> OpError {
    match s.code() {
        tonic::Code::DeadlineExceeded => OpError::Timeout,
        tonic::Code::Unavailable if s.message().contains("connect") => {
            OpError::Connect(s.message().to_string())
        }
        c => OpError::Status(c as u16, format!("{c:?}").to_lowercase()),
    }
}

impl EtcdConn {
    pub fn new(ch: Channel, timeout: Duration) -> EtcdConn {
        EtcdConn { grpc: Grpc::new(ch), timeout }
    }

    async fn unary<Q, R>(&mut self, path: &'static str, req: Q) -> Result<R, OpError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        // A channel to a member that is down reconnects forever: bound the wait.
        match tokio::time::timeout(self.timeout, self.grpc.ready()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(OpError::Connect(e.to_string())),
            Err(_) => return Err(OpError::Timeout),
        }
        let mut r = tonic::Request::new(req);
        r.set_timeout(self.timeout);
        let codec = ProstCodec::<Q, R>::default();
        let path = PathAndQuery::from_static(path);
        match self.grpc.unary(r, path, codec).await {
            Ok(resp) => Ok(resp.into_inner()),
            Err(s) => Err(status_error(s)),
        }
    }

    /// Returns the raft term of the answer (the term it was committed in).
    pub async fn put(&mut self, key: Bytes, value: Bytes) -> Result<u64, OpError> {
        let resp: PutResponse = self.unary(PUT, PutRequest { key, value }).await?;
        Ok(resp.header.map_or(0, |h| h.raft_term))
    }

    /// A linearizable read; returns whether the key was found.
    pub async fn get(&mut self, key: Bytes) -> Result<bool, OpError> {
        let resp: RangeResponse =
            self.unary(RANGE, RangeRequest { key, serializable: false }).await?;
        Ok(!resp.kvs.is_empty())
    }

    pub async fn status(&mut self) -> Result<StatusResponse, OpError> {
        self.unary(STATUS, StatusRequest {}).await
    }
}

/// The client address of the current leader among `endpoints`, with its member id and term.
pub async fn find_leader(endpoints: &[String], deadline: Duration) -> Result<(String, u64, u64)> {
    let until = tokio::time::Instant::now() + deadline;
    loop {
        for ep in endpoints {
            let Ok(ch) = tokio::time::timeout(Duration::from_millis(500), channel(ep)).await else {
                continue;
            };
            let Ok(ch) = ch else { continue };
            let mut c = EtcdConn::new(ch, Duration::from_millis(500));
            let Ok(st) = c.status().await else { continue };
            let me = st.header.as_ref().map_or(0, |h| h.member_id);
            if st.leader != 0 && st.leader == me {
                return Ok((ep.clone(), me, st.raft_term));
            }
        }
        if tokio::time::Instant::now() >= until {
            return Err(anyhow!("no etcd leader among {endpoints:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
