//! One TCP connection to one broker node, with request pipelining. Runs on the executor that
//! created it (it holds `Rc`s and glommio tasks).
//!
//! Kafka answers the requests of one connection in the order they were sent, so the pending
//! requests are a FIFO: the reader task pops the front and checks its correlation id. A writer
//! task owns the write half and coalesces small frames into one write. The number of requests
//! in flight is bounded by a semaphore (`ClientConfig::in_flight_max`).
//!
//! Security (`ClientConfig::security`): on SSL/SASL_SSL the socket is wrapped in rustls
//! (futures-rustls over the glommio stream) before anything is sent; on SASL_* the
//! connection authenticates right after ApiVersions (SaslHandshake v1, then
//! SaslAuthenticate rounds) and only then is handed to the caller. The read and write
//! loops are generic over the stream, so a PLAINTEXT connection runs exactly the code it
//! ran before TLS existed.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use glommio::Task;
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::TcpStream;
use glommio::sync::Semaphore;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};

use super::ClientConfig;
use super::error::{ClientError, Result};
use super::security::{SaslMechanism, SaslSettings};
use crate::scram::ScramClient;

/// The largest response frame accepted from a broker; a larger announced length closes the
/// connection before anything is allocated.
pub const FRAME_MAX_BYTES: usize = 100 << 20;
/// Frames below this size are copied into one write with their neighbours.
const COALESCE_FRAME_MAX_BYTES: usize = 64 << 10;
/// Upper bound of one coalesced write.
const COALESCE_WRITE_MAX_BYTES: usize = 256 << 10;
/// Read buffer of the reader task.
const READ_BUFFER_BYTES: usize = 256 << 10;
/// The highest ApiVersions version this client speaks (v3+ are flexible).
const API_VERSIONS_MAX: i16 = 3;
/// The highest SaslAuthenticate version this client speaks (v1 adds the session lifetime,
/// v2 is flexible).
const SASL_AUTHENTICATE_MAX: i16 = 2;

/// A one-shot slot a response (or failure) is delivered into.
#[derive(Default)]
struct Slot {
    result: Option<Result<Bytes>>,
    waker: Option<Waker>,
}

type SlotRef = Rc<RefCell<Slot>>;

fn deliver(slot: &SlotRef, result: Result<Bytes>) {
    let waker = {
        let mut s = slot.borrow_mut();
        s.result = Some(result);
        s.waker.take()
    };
    if let Some(w) = waker {
        w.wake();
    }
}

struct SlotFuture(SlotRef);

impl Future for SlotFuture {
    type Output = Result<Bytes>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut s = self.0.borrow_mut();
        match s.result.take() {
            Some(r) => Poll::Ready(r),
            None => {
                s.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

struct Pending {
    correlation_id: i32,
    response_header_version: i16,
    slot: SlotRef,
}

struct Shared {
    addr: String,
    pending: RefCell<VecDeque<Pending>>,
    /// Set once the connection is unusable; every later request fails with it.
    dead: RefCell<Option<ClientError>>,
}

impl Shared {
    fn kill(&self, err: ClientError) {
        {
            let mut dead = self.dead.borrow_mut();
            if dead.is_none() {
                *dead = Some(err.clone());
            }
        }
        let drained: Vec<Pending> = self.pending.borrow_mut().drain(..).collect();
        for p in drained {
            deliver(&p.slot, Err(err.clone()));
        }
    }
}

/// A broker's advertised version range for one API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRange {
    /// Lowest supported version.
    pub min: i16,
    /// Highest supported version.
    pub max: i16,
}

/// One connection to one broker, negotiated with ApiVersions.
pub struct Connection {
    shared: Rc<Shared>,
    next_correlation_id: Cell<i32>,
    writer_tx: LocalSender<Bytes>,
    in_flight: Semaphore,
    in_flight_max: usize,
    client_id: StrBytes,
    request_timeout: Duration,
    versions: RefCell<HashMap<i16, ApiRange>>,
    api_versions_version: Cell<i16>,
    /// When the SASL session the broker granted (KIP-368 session lifetime) is near its end:
    /// from then on `is_alive` is false, so the `Client` opens a fresh, authenticated
    /// connection for new requests instead of re-authenticating this one.
    retire_at: Cell<Option<Instant>>,
    _reader: Task<()>,
    _writer: Task<()>,
}

impl Connection {
    /// Connects to `addr` ("host:port"), runs the TLS handshake (SSL, SASL_SSL), negotiates
    /// API versions and authenticates (SASL_*), as `config.security` says. The TCP connect,
    /// the handshake and the SASL exchange each get `config.connect_timeout`.
    pub async fn connect(addr: &str, config: &ClientConfig) -> Result<Connection> {
        let stream = glommio::timer::timeout(config.connect_timeout, async {
            TcpStream::connect(addr).await
        })
        .await
        .map_err(|e| match e {
            glommio::GlommioError::TimedOut(_) => ClientError::Timeout {
                what: format!("connect {addr}"),
            },
            other => ClientError::Io {
                context: format!("connect {addr}"),
                kind: std::io::ErrorKind::ConnectionRefused,
                message: other.to_string(),
            },
        })?;
        stream
            .set_nodelay(true)
            .map_err(|e| ClientError::io(format!("set_nodelay {addr}"), &e.into()))?;
        let conn = match &config.security.tls {
            // PLAINTEXT and SASL_PLAINTEXT: the socket itself.
            None => Connection::start(addr, config, stream, false),
            Some(tls) => {
                let name = super::security::server_name(addr)
                    .map_err(|e| ClientError::InvalidArgument(e.to_string()))?;
                let connector = futures_rustls::TlsConnector::from(tls.clone());
                let handshake = glommio::timer::timeout(config.connect_timeout, async {
                    connector
                        .connect(name, stream)
                        .await
                        .map_err(glommio::GlommioError::from)
                })
                .await;
                let tls_stream = match handshake {
                    Ok(s) => s,
                    Err(glommio::GlommioError::TimedOut(_)) => {
                        return Err(ClientError::Timeout {
                            what: format!("TLS handshake with {addr}"),
                        });
                    }
                    // An unknown CA, a name mismatch, a plaintext port answering garbage...
                    Err(e) => {
                        return Err(ClientError::Tls {
                            addr: addr.to_owned(),
                            message: e.to_string(),
                        });
                    }
                };
                Connection::start(addr, config, tls_stream, true)
            }
        };
        conn.negotiate().await?;
        if let Some(sasl) = &config.security.sasl {
            glommio::timer::timeout(config.connect_timeout, async {
                Ok(conn.authenticate(sasl).await)
            })
            .await
            .map_err(|_| ClientError::Timeout {
                what: format!("SASL authentication with {addr}"),
            })??;
        }
        Ok(conn)
    }

    /// Starts the reader and writer tasks over `stream` (the socket, or TLS over it, which
    /// needs a `flush` after each write).
    fn start<S>(addr: &str, config: &ClientConfig, stream: S, flush: bool) -> Connection
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
    {
        let (rd, wr) = futures_lite::io::split(stream);
        let shared = Rc::new(Shared {
            addr: addr.to_owned(),
            pending: RefCell::new(VecDeque::new()),
            dead: RefCell::new(None),
        });
        let (tx, rx) = local_channel::new_unbounded();
        let reader = glommio::spawn_local(read_loop(rd, shared.clone()));
        let writer = glommio::spawn_local(write_loop(wr, rx, shared.clone(), flush));
        Connection {
            shared,
            next_correlation_id: Cell::new(1),
            writer_tx: tx,
            in_flight: Semaphore::new(config.in_flight_max.max(1) as u64),
            in_flight_max: config.in_flight_max.max(1),
            client_id: StrBytes::from_string(config.client_id.clone()),
            request_timeout: config.request_timeout,
            versions: RefCell::new(HashMap::new()),
            api_versions_version: Cell::new(0),
            retire_at: Cell::new(None),
            _reader: reader,
            _writer: writer,
        }
    }

    /// SaslHandshake v1 and the SaslAuthenticate rounds of the mechanism (KIP-152
    /// framing). A refusal is `ClientError::Authentication` with the broker's message.
    async fn authenticate(&self, sasl: &SaslSettings) -> Result<()> {
        let addr = &self.shared.addr;
        let refused = |message: String| ClientError::Authentication {
            addr: addr.clone(),
            message,
        };
        let mechanism = sasl.mechanism.name();
        let hs = self
            .request(
                &SaslHandshakeRequest::default()
                    .with_mechanism(StrBytes::from_static_str(mechanism)),
                1,
            )
            .await?;
        if hs.error_code != 0 {
            let offered: Vec<&str> = hs.mechanisms.iter().map(|m| m.as_str()).collect();
            return Err(refused(format!(
                "the broker does not enable {mechanism} (error {}; it offers {})",
                super::kafka_error_name(hs.error_code),
                if offered.is_empty() {
                    "none".to_string()
                } else {
                    offered.join(", ")
                }
            )));
        }
        let version = self
            .version_for::<SaslAuthenticateRequest>(SASL_AUTHENTICATE_MAX)
            .unwrap_or(0);
        let round = |token: Vec<u8>| async move {
            let resp = self
                .request(
                    &SaslAuthenticateRequest::default().with_auth_bytes(token.into()),
                    version,
                )
                .await?;
            if resp.error_code != 0 {
                let msg = resp.error_message.as_ref().map_or("", |m| m.as_str());
                return Err(refused(format!(
                    "{} ({}): {msg}",
                    super::kafka_error_name(resp.error_code),
                    resp.error_code
                )));
            }
            Ok((resp.auth_bytes, resp.session_lifetime_ms))
        };
        let lifetime_ms = match sasl.mechanism {
            SaslMechanism::Plain => {
                // RFC 4616: authzid NUL authcid NUL passwd (no authzid).
                let mut token = Vec::with_capacity(2 + sasl.username.len() + sasl.password.len());
                token.push(0);
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                round(token).await?.1
            }
            SaslMechanism::Scram(m) => {
                let mut scram = ScramClient::new(m, &sasl.username, &sasl.password)
                    .map_err(|e| refused(e.0))?;
                let (server_first, _) = round(scram.first_message()).await?;
                let last = scram
                    .final_message(&server_first)
                    .map_err(|e| refused(e.0))?;
                let (server_final, lifetime_ms) = round(last).await?;
                scram
                    .verify_server(&server_final)
                    .map_err(|e| refused(e.0))?;
                lifetime_ms
            }
        };
        if lifetime_ms > 0 {
            // Retired at 90% of the session, so requests sent on it reach the broker well
            // before it would close the connection.
            let retire_in = Duration::from_millis(lifetime_ms as u64 / 10 * 9);
            self.retire_at.set(Some(Instant::now() + retire_in));
        }
        Ok(())
    }

    /// The broker's address.
    pub fn addr(&self) -> &str {
        &self.shared.addr
    }

    /// False once the connection failed or its SASL session is near its end; the owner
    /// should reconnect.
    pub fn is_alive(&self) -> bool {
        self.shared.dead.borrow().is_none()
            && self.retire_at.get().is_none_or(|t| Instant::now() < t)
    }

    /// The broker's advertised version ranges, by API key.
    pub fn broker_versions(&self) -> HashMap<i16, ApiRange> {
        self.versions.borrow().clone()
    }

    /// The ApiVersions version the broker accepted.
    pub fn api_versions_version(&self) -> i16 {
        self.api_versions_version.get()
    }

    /// The highest version of `R` that the broker, the crate and `cap` all allow.
    pub fn version_for<R: Request>(&self, cap: i16) -> Result<i16> {
        let versions = self.versions.borrow();
        let broker = versions.get(&R::KEY).copied();
        let Some(b) = broker else {
            return Err(ClientError::UnsupportedApi {
                api_key: R::KEY,
                broker_range: None,
            });
        };
        let lo = b.min.max(R::VERSIONS.min);
        let hi = b.max.min(R::VERSIONS.max).min(cap);
        if lo > hi {
            return Err(ClientError::UnsupportedApi {
                api_key: R::KEY,
                broker_range: Some((b.min, b.max)),
            });
        }
        Ok(hi)
    }

    async fn negotiate(&self) -> Result<()> {
        let mut version = API_VERSIONS_MAX;
        // At most two rounds: the broker's error answer tells us its maximum.
        for _ in 0..2 {
            let req = ApiVersionsRequest::default()
                .with_client_software_name(StrBytes::from_static_str("osprey-client"))
                .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
            let body = self.request_bytes(&req, version).await?;
            // A broker that does not know our version answers in v0 format.
            let resp = match ApiVersionsResponse::decode(&mut body.clone(), version) {
                Ok(r) if r.error_code == 0 => r,
                _ => ApiVersionsResponse::decode(&mut body.clone(), 0)
                    .map_err(|e| ClientError::Protocol(format!("ApiVersions: {e}")))?,
            };
            let mut map = HashMap::new();
            for k in &resp.api_keys {
                map.insert(
                    k.api_key,
                    ApiRange {
                        min: k.min_version,
                        max: k.max_version,
                    },
                );
            }
            if resp.error_code == 35 {
                let Some(r) = map.get(&18) else {
                    break;
                };
                let next = r.max.min(API_VERSIONS_MAX);
                if next == version {
                    break;
                }
                version = next;
                continue;
            }
            super::error::check_code(resp.error_code, || "ApiVersions".into(), None)?;
            *self.versions.borrow_mut() = map;
            self.api_versions_version.set(version);
            return Ok(());
        }
        Err(ClientError::UnsupportedApi {
            api_key: 18,
            broker_range: None,
        })
    }

    fn check_alive(&self) -> Result<()> {
        match &*self.shared.dead.borrow() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    fn encode_frame<R: Request>(&self, req: &R, version: i16) -> Result<(i32, Bytes)> {
        let correlation_id = self.next_correlation_id.get();
        self.next_correlation_id
            .set(correlation_id.checked_add(1).unwrap_or(1));
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let hv = R::header_version(version);
        let size = header.compute_size(hv).map_err(|e| enc_err(R::KEY, e))?
            + req.compute_size(version).map_err(|e| enc_err(R::KEY, e))?;
        let mut buf = BytesMut::with_capacity(4 + size);
        buf.put_i32(
            i32::try_from(size).map_err(|_| ClientError::Encode("request too large".into()))?,
        );
        header
            .encode(&mut buf, hv)
            .map_err(|e| enc_err(R::KEY, e))?;
        req.encode(&mut buf, version)
            .map_err(|e| enc_err(R::KEY, e))?;
        Ok((correlation_id, buf.freeze()))
    }

    /// Sends `req` at `version` and returns the response body (after the response header).
    pub async fn request_bytes<R: Request>(&self, req: &R, version: i16) -> Result<Bytes> {
        let _permit =
            self.in_flight
                .acquire_permit(1)
                .await
                .map_err(|_| ClientError::ConnectionClosed {
                    addr: self.shared.addr.clone(),
                    reason: "in-flight semaphore closed".into(),
                })?;
        self.check_alive()?;
        let (correlation_id, frame) = self.encode_frame(req, version)?;
        let slot: SlotRef = Rc::default();
        // Pushing the pending entry and queueing the frame happen with no await in between, so
        // the FIFO order of `pending` is the order on the wire.
        self.shared.pending.borrow_mut().push_back(Pending {
            correlation_id,
            response_header_version: <R::Response as HeaderVersion>::header_version(version),
            slot: slot.clone(),
        });
        if self.writer_tx.try_send(frame).is_err() {
            let err = ClientError::ConnectionClosed {
                addr: self.shared.addr.clone(),
                reason: "writer stopped".into(),
            };
            self.shared.kill(err.clone());
            return Err(err);
        }
        let timeout = self.request_timeout;
        let res = futures_lite::future::or(SlotFuture(slot), async move {
            glommio::timer::sleep(timeout).await;
            Err(ClientError::Timeout {
                what: format!("api {} request {correlation_id}", R::KEY),
            })
        })
        .await;
        if let Err(ClientError::Timeout { .. }) = &res {
            // A late answer would still be matched in order; but a broker this slow is treated
            // like a lost one, as Kafka clients do: the connection is closed.
            self.shared.kill(ClientError::ConnectionClosed {
                addr: self.shared.addr.clone(),
                reason: "request timed out".into(),
            });
        }
        res
    }

    /// Sends `req` and decodes its typed response.
    pub async fn request<R: Request>(&self, req: &R, version: i16) -> Result<R::Response>
    where
        R::Response: 'static,
    {
        let body = self.request_bytes(req, version).await?;
        // Tagged fields the version does not define are skipped (see `decode`).
        super::decode::decode_response::<R>(&body, version).map_err(|e| {
            ClientError::Protocol(format!("decode response api {} v{version}: {e}", R::KEY))
        })
    }

    /// Sends a request the broker does not answer (Produce with acks=0). Waits while more
    /// than `in_flight_max` frames are queued for the socket, so acks=0 has backpressure too.
    pub async fn send_no_response<R: Request>(&self, req: &R, version: i16) -> Result<()> {
        let started = std::time::Instant::now();
        while self.writer_tx.len() > self.in_flight_max {
            self.check_alive()?;
            if started.elapsed() > self.request_timeout {
                return Err(ClientError::Timeout {
                    what: format!("socket queue of {}", self.shared.addr),
                });
            }
            glommio::timer::sleep(Duration::from_micros(50)).await;
        }
        self.check_alive()?;
        let (_, frame) = self.encode_frame(req, version)?;
        self.writer_tx
            .try_send(frame)
            .map_err(|_| ClientError::ConnectionClosed {
                addr: self.shared.addr.clone(),
                reason: "writer stopped".into(),
            })
    }

    /// Bytes queued for the writer but not yet written (acks=0 backpressure).
    pub fn queued_frames(&self) -> usize {
        self.writer_tx.len()
    }
}

fn enc_err(api_key: i16, e: impl std::fmt::Display) -> ClientError {
    ClientError::Encode(format!("api {api_key}: {e}"))
}

async fn read_loop<S: futures_lite::AsyncRead + Unpin>(rd: ReadHalf<S>, shared: Rc<Shared>) {
    let mut rd = BufReader::with_capacity(READ_BUFFER_BYTES, rd);
    let err = loop {
        let mut len = [0u8; 4];
        if let Err(e) = rd.read_exact(&mut len).await {
            break ClientError::ConnectionClosed {
                addr: shared.addr.clone(),
                reason: e.to_string(),
            };
        }
        let n = i32::from_be_bytes(len);
        if n < 4 || n as usize > FRAME_MAX_BYTES {
            // A TLS record header (alert 0x15 or handshake 0x16, version 3.x) where a Kafka
            // frame should start: a plaintext client on an SSL or SASL_SSL listener.
            if matches!(len[0], 0x15 | 0x16) && len[1] == 3 {
                break ClientError::Tls {
                    addr: shared.addr.clone(),
                    message: "the broker answered with TLS: this listener needs \
                              security.protocol=SSL or SASL_SSL"
                        .into(),
                };
            }
            break ClientError::FrameLength {
                len: n.into(),
                max: FRAME_MAX_BYTES,
            };
        }
        let mut buf = BytesMut::zeroed(n as usize);
        if let Err(e) = rd.read_exact(&mut buf).await {
            break ClientError::ConnectionClosed {
                addr: shared.addr.clone(),
                reason: e.to_string(),
            };
        }
        let mut body = buf.freeze();
        let correlation_id = (&body[..4]).get_i32();
        let Some(p) = shared.pending.borrow_mut().pop_front() else {
            break ClientError::Protocol(format!(
                "unsolicited response with correlation id {correlation_id}"
            ));
        };
        if p.correlation_id != correlation_id {
            let err = ClientError::Protocol(format!(
                "correlation id {correlation_id}, expected {}",
                p.correlation_id
            ));
            deliver(&p.slot, Err(err.clone()));
            break err;
        }
        match ResponseHeader::decode(&mut body, p.response_header_version) {
            Ok(_) => deliver(&p.slot, Ok(body)),
            Err(e) => {
                let err = ClientError::Protocol(format!("response header: {e}"));
                deliver(&p.slot, Err(err.clone()));
                break err;
            }
        }
    };
    shared.kill(err);
}

async fn write_loop<S: futures_lite::AsyncWrite + Unpin>(
    mut wr: WriteHalf<S>,
    rx: LocalReceiver<Bytes>,
    shared: Rc<Shared>,
    flush: bool,
) {
    let mut out = BytesMut::with_capacity(COALESCE_WRITE_MAX_BYTES);
    while let Some(frame) = rx.recv().await {
        let mut result = Ok(());
        if frame.len() >= COALESCE_FRAME_MAX_BYTES {
            result = wr.write_all(&frame).await;
        } else {
            out.clear();
            out.extend_from_slice(&frame);
            // Take whatever else is already queued, without waiting.
            while out.len() < COALESCE_WRITE_MAX_BYTES {
                match futures_lite::future::poll_once(rx.recv()).await {
                    Some(Some(next)) => {
                        if next.len() >= COALESCE_FRAME_MAX_BYTES {
                            result = wr.write_all(&out).await;
                            out.clear();
                            if result.is_ok() {
                                result = wr.write_all(&next).await;
                            }
                            break;
                        }
                        out.extend_from_slice(&next);
                    }
                    _ => break,
                }
            }
            if result.is_ok() && !out.is_empty() {
                result = wr.write_all(&out).await;
            }
        }
        // TLS keeps records rustls could not write yet in its buffer until flushed; the
        // plain socket's writes are already on the wire.
        if flush && result.is_ok() {
            result = wr.flush().await;
        }
        if let Err(e) = result {
            shared.kill(ClientError::io(format!("write {}", shared.addr), &e));
            return;
        }
    }
}

/// Used by `Connection::version_for` callers that need the crate's range.
pub fn crate_range<M: Message>() -> ApiRange {
    ApiRange {
        min: M::VERSIONS.min,
        max: M::VERSIONS.max,
    }
}
