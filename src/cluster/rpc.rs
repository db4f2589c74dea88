//! The controller quorum's wire: Raft RPCs (openraft's AppendEntries, Vote,
//! InstallSnapshot), metadata proposals forwarded to the leader, and metadata watches of
//! hosts that are not voters. Each message is a frame `[len u32 BE][JSON]` over TCP on the
//! controller port (`--controller-listen`), inside mutual TLS with `--controller-tls`
//! (`ControllerTls`, set once per process before the controller thread connects or accepts).
//!
//! Runs on: the controller thread (tokio, current-thread runtime). Never on a shard.

use std::time::Duration;

use openraft::BasicNode;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::state::{MetaCommand, MetaReply};
use super::{NodeId, TypeConfig};
use crate::metadata::ClusterMeta;

/// Largest controller frame (a metadata snapshot travels in one).
pub const CONTROLLER_FRAME_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Connect timeout to another controller (and, apart, its TLS handshake).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long an accepted controller connection may take to finish its TLS handshake.
pub const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Mutual TLS of the controller wire (`--controller-tls`): every connection, in and out,
/// presents the host's certificate and must present one chaining to `--tls-ca`.
pub struct ControllerTls {
    pub acceptor: tokio_rustls::TlsAcceptor,
    pub connector: tokio_rustls::TlsConnector,
}

/// One controller thread per process: set before it starts, read-only after.
static TLS: std::sync::OnceLock<ControllerTls> = std::sync::OnceLock::new();

/// Turns on TLS for every controller connection of this process (once, before the
/// controller thread starts; a second call is ignored).
pub fn set_tls(tls: ControllerTls) {
    let _ = TLS.set(tls);
}

/// The controller wire's TLS, when `--controller-tls` is on.
pub fn tls() -> Option<&'static ControllerTls> {
    TLS.get()
}

/// Builds the controller wire's TLS from the broker's files: its certificate and key on
/// both ends, client certificates required and checked against the CA, and the voter's
/// address checked against the server certificate (an IP SAN for an IP).
pub fn tls_from(s: &crate::tls::TlsSettings) -> Result<ControllerTls, String> {
    let ca =
        s.ca.clone()
            .ok_or("--controller-tls needs --tls-ca (the CA of every host's certificate)")?;
    let server = crate::tls::server_config(&crate::tls::TlsSettings {
        client_auth: crate::tls::ClientAuth::Required,
        ca: Some(ca.clone()),
        ..s.clone()
    })?;
    let client = crate::client::security::tls_config(&crate::client::security::TlsFiles {
        ca: Some(ca),
        cert: Some(s.cert.clone()),
        key: Some(s.key.clone()),
        skip_hostname_check: false,
    })?;
    Ok(ControllerTls {
        acceptor: tokio_rustls::TlsAcceptor::from(server),
        connector: tokio_rustls::TlsConnector::from(client),
    })
}

/// A controller connection: the socket, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + Sync {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + Sync> Stream for T {}
pub type BoxStream = Box<dyn Stream>;

#[derive(Serialize, Deserialize)]
pub enum Request {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// Apply `cmd` through the quorum; `hops` counts forwards so a proposal never loops.
    Propose {
        cmd: MetaCommand,
        hops: u8,
    },
    /// Answer with the metadata once its epoch is above `after_epoch`, or after `wait_ms`.
    WatchMeta {
        after_epoch: u64,
        wait_ms: u64,
    },
    /// A host is alive (sent to every voter).
    Heartbeat {
        host_id: u32,
    },
    /// DescribeQuorum, answered by the quorum leader; `hops` as for `Propose`.
    DescribeQuorum {
        hops: u8,
    },
}

#[derive(Serialize, Deserialize)]
pub enum Response {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Propose(Result<MetaReply, String>),
    Meta(Box<ClusterMeta>),
    /// A heartbeat was recorded; `true` when the answering voter leads the quorum.
    HeartbeatAck(bool),
    Quorum(Result<super::QuorumInfo, String>),
}

pub async fn write_frame<T: Serialize, S: AsyncWrite + Unpin + ?Sized>(
    s: &mut S,
    msg: &T,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    if body.len() > CONTROLLER_FRAME_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "controller frame of {} bytes exceeds {CONTROLLER_FRAME_MAX_BYTES}",
            body.len()
        )));
    }
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    s.write_all(&buf).await?;
    // TLS holds the last record until flushed; a socket's flush does nothing.
    s.flush().await
}

pub async fn read_frame<T: for<'de> Deserialize<'de>, S: AsyncRead + Unpin + ?Sized>(
    s: &mut S,
) -> std::io::Result<T> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > CONTROLLER_FRAME_MAX_BYTES {
        return Err(std::io::Error::other(format!(
            "controller frame of {len} bytes exceeds {CONTROLLER_FRAME_MAX_BYTES}"
        )));
    }
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(std::io::Error::other)
}

/// One connection to another controller, reopened after any error.
pub struct Peer {
    addr: String,
    stream: Option<BoxStream>,
}

impl Peer {
    pub fn new(addr: impl Into<String>) -> Peer {
        Peer {
            addr: addr.into(),
            stream: None,
        }
    }

    pub async fn call(&mut self, req: &Request, timeout: Duration) -> std::io::Result<Response> {
        let result = tokio::time::timeout(timeout, async {
            if self.stream.is_none() {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&self.addr))
                    .await
                    .map_err(|_| {
                        std::io::Error::other(format!("connect to {} timed out", self.addr))
                    })??;
                s.set_nodelay(true)?;
                self.stream = Some(match tls() {
                    None => Box::new(s),
                    Some(t) => {
                        let name = crate::client::security::server_name(&self.addr)
                            .map_err(std::io::Error::other)?;
                        let s = tokio::time::timeout(CONNECT_TIMEOUT, t.connector.connect(name, s))
                            .await
                            .map_err(|_| {
                                std::io::Error::other(format!(
                                    "TLS handshake with {} timed out",
                                    self.addr
                                ))
                            })??;
                        Box::new(s)
                    }
                });
            }
            let Some(s) = self.stream.as_mut() else {
                return Err(std::io::Error::other("no connection"));
            };
            write_frame(s, req).await?;
            read_frame::<Response, _>(s).await
        })
        .await
        .unwrap_or_else(|_| {
            Err(std::io::Error::other(format!(
                "call to {} timed out",
                self.addr
            )))
        });
        if result.is_err() {
            self.stream = None;
        }
        result
    }
}

/// openraft's network: one `Peer` per target voter.
pub struct Network;

pub struct PeerNetwork {
    target: NodeId,
    peer: Peer,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerNetwork {
        PeerNetwork {
            target,
            peer: Peer::new(node.addr.clone()),
        }
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "unexpected answer to {what}"
    ))))
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self
            .peer
            .call(&Request::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::AppendEntries(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("AppendEntries")),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .peer
            .call(&Request::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(Response::InstallSnapshot(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("InstallSnapshot")),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.peer.call(&Request::Vote(rpc), option.hard_ttl()).await {
            Ok(Response::Vote(r)) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => Err(unexpected("Vote")),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }
}
