//! One client connection: reads size-prefixed request frames, runs up to
//! `INFLIGHT_REQUESTS_PER_CONNECTION_MAX` of them concurrently, and writes the responses in
//! request order, record data with one vectored write and no copy.
//!
//! Runs on: the shard that accepted the connection. Bad input (oversized, negative or
//! truncated frames, unknown API keys, undecodable bodies) closes the connection with a log
//! line naming the client and the reason; it never panics and never allocates more than
//! the checked frame length.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::sync::StaticPermit;

use crate::config::{
    FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX, INFLIGHT_REQUESTS_PER_CONNECTION_MAX,
};
use crate::handlers::{self, Reply};
use crate::protocol::{self, ProtocolError, RequestFrame, error};
use crate::sasl::{Exchange, Outcome};
use crate::session::Session;
use crate::shard::Shard;
use kafka_protocol::messages::ApiKey;

/// Kafka's connections.max.idle.ms default: idle connections are closed after 10 minutes.
const CONNECTION_IDLE_MAX: Duration = Duration::from_secs(600);
/// The longest a TLS handshake may take once the connection is accepted.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Plaintext gathered per TLS write (a few 16 KiB records at a time).
const TLS_WRITE_CHUNK_BYTES: usize = 256 * 1024;
/// Most iovecs handed to one sendmsg call (Linux IOV_MAX).
const IOVECS_PER_WRITE_MAX: usize = 1024;

/// Where a connection on a SASL listener is in authenticating (Kafka's
/// SaslServerAuthenticator states); `Done` on other listeners.
enum Auth {
    /// Only ApiVersions and SaslHandshake are accepted.
    AwaitHandshake,
    /// A mechanism was chosen; `raw`: SaslHandshake v0, tokens come as bare frames
    /// instead of SaslAuthenticate requests.
    /// `reauth`: a re-authentication (KIP-368) of an authenticated connection, which must
    /// keep its principal.
    Exchanging {
        exchange: Exchange,
        raw: bool,
        reauth: bool,
    },
    /// Authenticated; `expires`: when the session ends unless re-authenticated
    /// (`--connections-max-reauth-ms`).
    Done { expires: Option<Instant> },
    /// Authentication failed; the answer is sent, then the connection closes.
    Failed,
}

enum AuthAction {
    /// An ordinary request: dispatch it.
    Dispatch(RequestFrame),
    /// Send this frame (after the delay), read on (or close once `Auth::Failed`).
    Reply(Bytes, Duration),
    Close(String),
}

/// One frame through the SASL state machine of the connection: requests before
/// authentication other than ApiVersions, SaslHandshake and SaslAuthenticate close the
/// connection, as Kafka does; failed authentication answers SASL_AUTHENTICATION_FAILED
/// with a message that does not say what was wrong (the log line does), held back by the
/// shard's failure throttle, then closes.
fn sasl_step(
    shard: &Shard,
    session: &Session,
    auth: &mut Auth,
    header: Option<RequestFrame>,
    frame: Bytes,
) -> Result<AuthAction, ProtocolError> {
    let peer = session.peer;
    let Some(req) = header else {
        // Legacy framing (SaslHandshake v0): the frame is the token itself, and so is the
        // answer; a failure just closes the connection.
        let Auth::Exchanging {
            exchange, reauth, ..
        } = auth
        else {
            return Ok(AuthAction::Close(
                "raw SASL token outside an exchange".into(),
            ));
        };
        let mechanism = exchange.mechanism();
        return Ok(
            match exchange.step(&frame, &shard.meta(), &shard.config.sasl_plain_users) {
                Outcome::Continue(b) => AuthAction::Reply(raw_frame(&b), Duration::ZERO),
                Outcome::Done { principal, reply } if !*reauth => {
                    log::debug!("{peer} authenticated as {principal} with {mechanism}");
                    session.set_principal(principal);
                    *auth = Auth::Done {
                        expires: session_expiry(shard),
                    };
                    AuthAction::Reply(raw_frame(&reply), Duration::ZERO)
                }
                Outcome::Done { .. } => {
                    AuthAction::Close("re-authentication in the legacy framing".into())
                }
                Outcome::Failed(reason) => {
                    let delay = shard.auth_failures.failed(peer.ip());
                    log::warn!("failed authentication from {peer} with {mechanism}: {reason}");
                    *auth = Auth::Failed;
                    // Kafka closes without an answer in this framing: an empty reply frame is
                    // not sent, only the delay is kept.
                    AuthAction::Reply(Bytes::new(), delay)
                }
            },
        );
    };
    if !session.protocol.is_sasl() {
        return Ok(AuthAction::Dispatch(req));
    }
    let reauth_allowed = shard.config.connections_max_reauth_ms > 0;
    match (req.api_key, &mut *auth) {
        (ApiKey::ApiVersions, _) => Ok(AuthAction::Dispatch(req)),
        (ApiKey::SaslHandshake, Auth::Done { .. }) if reauth_allowed && req.version >= 1 => {
            let (chosen, bytes) = handlers::sasl_handshake::answer(shard, &req)?;
            match chosen.map(|m| Exchange::start(&m)) {
                Some(Ok(exchange)) => {
                    *auth = Auth::Exchanging {
                        exchange,
                        raw: false,
                        reauth: true,
                    };
                    Ok(AuthAction::Reply(bytes, Duration::ZERO))
                }
                Some(Err(e)) => Ok(AuthAction::Close(format!("SASL re-authentication: {e}"))),
                None => Ok(AuthAction::Close(
                    "re-authentication with a mechanism not enabled".into(),
                )),
            }
        }
        (ApiKey::SaslHandshake, Auth::AwaitHandshake) => {
            if handlers::spec(ApiKey::SaslHandshake)
                .is_none_or(|s| req.version > s.max_version || req.version < s.min_version)
            {
                return Ok(AuthAction::Close(format!(
                    "SaslHandshake v{} is not supported",
                    req.version
                )));
            }
            let (chosen, bytes) = handlers::sasl_handshake::answer(shard, &req)?;
            if let Some(m) = chosen {
                match Exchange::start(&m) {
                    Ok(exchange) => {
                        *auth = Auth::Exchanging {
                            exchange,
                            raw: req.version == 0,
                            reauth: false,
                        }
                    }
                    Err(e) => return Ok(AuthAction::Close(format!("SASL {m}: {e}"))),
                }
            }
            Ok(AuthAction::Reply(bytes, Duration::ZERO))
        }
        (
            ApiKey::SaslAuthenticate,
            Auth::Exchanging {
                exchange,
                raw: false,
                reauth,
            },
        ) => {
            if handlers::spec(ApiKey::SaslAuthenticate)
                .is_none_or(|s| req.version > s.max_version || req.version < s.min_version)
            {
                return Ok(AuthAction::Close(format!(
                    "SaslAuthenticate v{} is not supported",
                    req.version
                )));
            }
            let token = handlers::sasl_authenticate::token(&req)?;
            let mechanism = exchange.mechanism();
            let lifetime_ms = shard.config.connections_max_reauth_ms as i64;
            let mut outcome = exchange.step(&token, &shard.meta(), &shard.config.sasl_plain_users);
            // Kafka: a re-authentication may not change the connection's principal.
            if let Outcome::Done { principal, .. } = &outcome
                && *reauth
                && *principal != session.principal()
            {
                outcome = Outcome::Failed(format!(
                    "re-authentication as {principal} on a connection of {}",
                    session.principal()
                ));
            }
            match outcome {
                Outcome::Continue(b) => Ok(AuthAction::Reply(
                    handlers::sasl_authenticate::answer(shard, &req, Ok(b), 0)?,
                    Duration::ZERO,
                )),
                Outcome::Done { principal, reply } => {
                    if *reauth {
                        log::info!("{peer} re-authenticated as {principal} with {mechanism}");
                    } else {
                        log::debug!("{peer} authenticated as {principal} with {mechanism}");
                    }
                    session.set_principal(principal);
                    *auth = Auth::Done {
                        expires: session_expiry(shard),
                    };
                    Ok(AuthAction::Reply(
                        handlers::sasl_authenticate::answer(shard, &req, Ok(reply), lifetime_ms)?,
                        Duration::ZERO,
                    ))
                }
                Outcome::Failed(reason) => {
                    let delay = shard.auth_failures.failed(peer.ip());
                    log::warn!("failed authentication from {peer} with {mechanism}: {reason}");
                    *auth = Auth::Failed;
                    let message = format!(
                        "Authentication failed during authentication due to invalid credentials with SASL mechanism {mechanism}"
                    );
                    Ok(AuthAction::Reply(
                        handlers::sasl_authenticate::answer(
                            shard,
                            &req,
                            Err((error::SASL_AUTHENTICATION_FAILED, message)),
                            0,
                        )?,
                        delay,
                    ))
                }
            }
        }
        (_, Auth::Done { expires }) => match req.api_key {
            // Without --connections-max-reauth-ms SaslAuthenticate answers a session
            // lifetime of 0, so clients never start a re-authentication.
            ApiKey::SaslHandshake | ApiKey::SaslAuthenticate => Ok(AuthAction::Close(format!(
                "{:?} after authentication (re-authentication is off or needs SaslHandshake v1)",
                req.api_key
            ))),
            // KIP-368: a session past its lifetime serves nothing until re-authenticated.
            _ if expires.is_some_and(|e| Instant::now() >= e) => Ok(AuthAction::Close(
                "SASL session expired without re-authentication (connections-max-reauth-ms)".into(),
            )),
            _ => Ok(AuthAction::Dispatch(req)),
        },
        (key, _) => Ok(AuthAction::Close(format!(
            "unexpected {key:?} request before SASL authentication completed"
        ))),
    }
}

/// When a session authenticated now must re-authenticate (KIP-368), if at all.
fn session_expiry(shard: &Shard) -> Option<Instant> {
    let ms = shard.config.connections_max_reauth_ms;
    (ms > 0).then(|| Instant::now() + Duration::from_millis(ms))
}

/// A length-prefixed raw SASL token (legacy framing).
fn raw_frame(token: &[u8]) -> Bytes {
    let mut b = Vec::with_capacity(4 + token.len());
    b.extend_from_slice(&(token.len() as i32).to_be_bytes());
    b.extend_from_slice(token);
    Bytes::from(b)
}

type Pending = glommio::task::JoinHandle<Result<Reply, ProtocolError>>;

enum ReadOutcome {
    Frame(Bytes, StaticPermit),
    Closed,
    Shutdown,
    Idle,
    Error(String),
}

/// Serves one connection until the client closes it, it misbehaves, or the shard stops.
pub async fn serve(shard: Rc<Shard>, stream: TcpStream, peer: SocketAddr, listener: usize) {
    let session = Rc::new(Session::new(
        peer,
        listener,
        &shard.config.listeners[listener],
    ));
    if let Err(e) = stream.set_nodelay(true) {
        log::debug!("{peer}: set_nodelay: {e}");
    }
    if !session.protocol.is_tls() {
        let fd = stream.as_raw_fd();
        return serve_stream(shard, session, stream, Some(fd)).await;
    }
    let Some(acceptor) = shard.tls_acceptor(listener) else {
        log::error!("closing connection from {peer}: no TLS configured for an SSL listener");
        return;
    };
    let accepted = glommio::timer::timeout(TLS_HANDSHAKE_TIMEOUT, async {
        acceptor
            .accept(stream)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await;
    let tls = match accepted {
        Ok(tls) => tls,
        Err(glommio::GlommioError::TimedOut(_)) => {
            log::warn!(
                "closing connection from {peer}: TLS handshake not done within {TLS_HANDSHAKE_TIMEOUT:?}"
            );
            return;
        }
        Err(e) => {
            // A plaintext client on a TLS port, an unknown CA, no client certificate
            // where one is required...
            log::warn!("closing connection from {peer}: TLS handshake failed: {e}");
            return;
        }
    };
    // On SSL listeners a client certificate names the principal (SASL_SSL: SASL does).
    if let Some(cert) = tls.get_ref().1.peer_certificates().and_then(|c| c.first())
        && let Some(p) = crate::tls::principal_of(cert)
    {
        session.set_principal(p);
    }
    serve_stream(shard, session, tls, None).await
}

/// Serves the requests of one connection over `stream`; `fd` is the socket for the
/// zero-copy vectored writes when the stream is the plain socket (`None` under TLS).
async fn serve_stream<S>(shard: Rc<Shard>, session: Rc<Session>, stream: S, fd: Option<RawFd>)
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let peer = session.peer;
    let (mut reader, writer) = futures_lite::io::split(stream);
    let (tx, rx) = local_channel::new_bounded::<Pending>(INFLIGHT_REQUESTS_PER_CONNECTION_MAX);
    let writer_task = glommio::spawn_local(write_responses(shard.clone(), writer, fd, rx, peer));
    // Fetch response bytes this connection holds until written (see `memory::MemoryLease`).
    let responses = Rc::new(glommio::sync::Semaphore::new(
        FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX,
    ));
    let mut auth = if session.protocol.is_sasl() {
        Auth::AwaitHandshake
    } else {
        Auth::Done { expires: None }
    };
    loop {
        // Before authentication a frame is bounded by Kafka's sasl.server.max.receive.size.
        let frame_max = if matches!(auth, Auth::Done { .. }) {
            protocol::REQUEST_FRAME_MAX_BYTES
        } else {
            crate::sasl::UNAUTHENTICATED_FRAME_MAX_BYTES
        };
        match read_frame(&shard, &mut reader, frame_max).await {
            ReadOutcome::Frame(frame, permit) => {
                // A host cut off from the controller quorum serves stale metadata: closing
                // its client connections sends clients to the other hosts, which know
                // the new leaders (see `cluster::watch_isolation`).
                if shard.isolated() {
                    log::info!(
                        "closing connection from {peer}: this host is cut off from the controller quorum"
                    );
                    break;
                }
                let header = if let Auth::Exchanging { raw: true, .. } = auth {
                    None
                } else {
                    match protocol::decode_request(frame.clone()) {
                        Ok(h) => Some(h),
                        Err(e) => {
                            log::warn!("closing connection from {peer}: {e}");
                            break;
                        }
                    }
                };
                let header = match sasl_step(&shard, &session, &mut auth, header, frame) {
                    Ok(AuthAction::Dispatch(mut h)) => {
                        h.peer = Some(peer);
                        h
                    }
                    Ok(AuthAction::Reply(bytes, delay)) => {
                        let task = glommio::spawn_local(async move {
                            if !delay.is_zero() {
                                glommio::timer::sleep(delay).await;
                            }
                            drop(permit);
                            Ok(Reply::Frame(bytes))
                        })
                        .detach();
                        if tx.send(task).await.is_err() {
                            break;
                        }
                        if matches!(auth, Auth::Failed) {
                            break;
                        }
                        continue;
                    }
                    Ok(AuthAction::Close(reason)) => {
                        log::warn!("closing connection from {peer}: {reason}");
                        break;
                    }
                    Err(e) => {
                        log::warn!("closing connection from {peer}: {e}");
                        break;
                    }
                };
                let shard = shard.clone();
                let session = session.clone();
                let responses = responses.clone();
                let task = glommio::spawn_local(async move {
                    let reply = handlers::dispatch(&shard, &session, header, &responses).await;
                    drop(permit);
                    reply
                })
                .detach();
                // Waits while the writer is INFLIGHT_REQUESTS_PER_CONNECTION_MAX behind: the
                // client is throttled by TCP instead of by memory.
                if tx.send(task).await.is_err() {
                    break;
                }
            }
            ReadOutcome::Closed | ReadOutcome::Shutdown => break,
            ReadOutcome::Idle => {
                log::info!("closing connection from {peer}: idle for {CONNECTION_IDLE_MAX:?}");
                break;
            }
            ReadOutcome::Error(reason) => {
                log::warn!("closing connection from {peer}: {reason}");
                break;
            }
        }
    }
    // Let the writer finish every request already read, in order, then close.
    drop(tx);
    writer_task.await;
    // A fetch still waiting for this connection's response memory gives up.
    responses.close();
}

async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    reader: &mut R,
    frame_max: usize,
) -> ReadOutcome {
    let mut len_buf = [0u8; 4];
    if shard.shutting_down.get() {
        return ReadOutcome::Shutdown;
    }
    // Between frames: race the next length prefix against shutdown and the idle limit.
    let first = future::or(
        async { Some(reader.read(&mut len_buf).await) },
        future::or(
            async {
                shard.shutdown.notified().await;
                None
            },
            async {
                glommio::timer::sleep(CONNECTION_IDLE_MAX).await;
                Some(Err(std::io::Error::from(std::io::ErrorKind::TimedOut)))
            },
        ),
    )
    .await;
    let got = match first {
        None => return ReadOutcome::Shutdown,
        Some(Ok(0)) => return ReadOutcome::Closed,
        Some(Ok(n)) => n,
        Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => return ReadOutcome::Idle,
        Some(Err(e)) if is_disconnect(&e) => return ReadOutcome::Closed,
        Some(Err(e)) => return ReadOutcome::Error(format!("read error: {e}")),
    };
    // From the first byte on, the whole frame (the rest of the length prefix, the body)
    // must arrive within the frame deadline (`--frame-read-timeout-ms`): a client that
    // trickles bytes in (slowloris) holds a connection slot and request memory only that
    // long.
    let frame_timeout = Duration::from_millis(shard.config.frame_read_timeout_ms);
    let frame_deadline = Instant::now() + frame_timeout;
    if got < 4 {
        match glommio::timer::timeout(frame_timeout, async {
            reader
                .read_exact(&mut len_buf[got..])
                .await
                .map_err(glommio::GlommioError::from)
        })
        .await
        {
            Ok(()) => {}
            Err(glommio::GlommioError::TimedOut(_)) => {
                return ReadOutcome::Error(format!(
                    "frame length did not arrive within {frame_timeout:?}"
                ));
            }
            Err(e) => return ReadOutcome::Error(format!("truncated frame length: {e}")),
        }
    }
    let len = match protocol::check_frame_len(i32::from_be_bytes(len_buf)) {
        Ok(len) => len,
        Err(e) => return ReadOutcome::Error(e.to_string()),
    };
    if len > frame_max {
        return ReadOutcome::Error(format!(
            "frame of {len} bytes before authentication exceeds {frame_max} bytes (sasl.server.max.receive.size)"
        ));
    }
    // Reserve the frame's bytes from the shard's request memory before allocating them.
    let permit = match shard.request_memory.acquire_static_permit(len as u64).await {
        Ok(p) => p,
        Err(_) => return ReadOutcome::Shutdown,
    };
    let mut buf = vec![0u8; len];
    // A client that announces a frame and then stalls would hold its share of the shard's
    // request memory forever: the body must arrive by the frame deadline.
    let left = frame_deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    match glommio::timer::timeout(left, async {
        reader
            .read_exact(&mut buf)
            .await
            .map_err(glommio::GlommioError::from)
    })
    .await
    {
        Ok(()) => {}
        Err(glommio::GlommioError::TimedOut(_)) => {
            return ReadOutcome::Error(format!(
                "frame body of {len} bytes did not arrive within {frame_timeout:?}"
            ));
        }
        Err(e) => {
            return ReadOutcome::Error(format!("truncated frame: expected {len} bytes: {e}"));
        }
    }
    crate::metrics::add(&shard.metrics.bytes_in, (len + 4) as u64);
    ReadOutcome::Frame(Bytes::from(buf), permit)
}

fn is_disconnect(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::UnexpectedEof
    )
}

async fn write_responses<W: futures_lite::AsyncWrite + Unpin>(
    shard: Rc<Shard>,
    mut writer: W,
    fd: Option<RawFd>,
    rx: local_channel::LocalReceiver<Pending>,
    peer: SocketAddr,
) {
    while let Some(task) = rx.recv().await {
        let reply = match task.await {
            Some(Ok(reply)) => reply,
            Some(Err(e)) => {
                log::warn!("closing connection from {peer}: {e}");
                break;
            }
            None => break,
        };
        let (result, len) = match (reply, fd) {
            (Reply::None, _) => (Ok(()), 0),
            (Reply::Frame(bytes), Some(fd)) => (
                write_all_vectored(&mut writer, fd, &[&bytes]).await,
                bytes.len(),
            ),
            (Reply::Frame(bytes), None) => {
                (write_all_tls(&mut writer, &[&bytes]).await, bytes.len())
            }
            (Reply::Pieces(pieces, lease), fd) => {
                let slices: Vec<&[u8]> = pieces.iter().map(|p| p.as_slice()).collect();
                let len = slices.iter().map(|s| s.len()).sum();
                let written = match fd {
                    Some(fd) => write_all_vectored(&mut writer, fd, &slices).await,
                    None => write_all_tls(&mut writer, &slices).await,
                };
                drop(slices);
                drop(pieces);
                drop(lease);
                (written, len)
            }
        };
        if result.is_ok() {
            crate::metrics::add(&shard.metrics.bytes_out, len as u64);
        }
        if let Err(e) = result {
            if !is_disconnect(&e) {
                log::warn!("write to {peer} failed: {e}");
            }
            break;
        }
    }
    let _ = writer.close().await;
}

/// Writes all slices through TLS: rustls encrypts into its own buffer (one copy of the
/// record data; the zero-copy path of plain sockets does not exist here), so small
/// slices are first gathered into chunks of up to `TLS_WRITE_CHUNK_BYTES` to make full
/// TLS records and few syscalls.
async fn write_all_tls<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    slices: &[&[u8]],
) -> std::io::Result<()> {
    let mut chunk: Vec<u8> = Vec::new();
    for s in slices {
        if !chunk.is_empty() && chunk.len() + s.len() > TLS_WRITE_CHUNK_BYTES {
            writer.write_all(&chunk).await?;
            chunk.clear();
        }
        if s.len() >= TLS_WRITE_CHUNK_BYTES {
            writer.write_all(s).await?;
        } else {
            chunk.extend_from_slice(s);
        }
    }
    if !chunk.is_empty() {
        writer.write_all(&chunk).await?;
    }
    writer.flush().await
}

/// Writes all slices: first with non-blocking `sendmsg` over iovecs (one syscall, no
/// copy into a staging buffer); whatever the socket buffer cannot take right now goes
/// through the runtime's awaited write, then the fast path resumes.
async fn write_all_vectored<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    fd: RawFd,
    slices: &[&[u8]],
) -> std::io::Result<()> {
    let mut idx = 0;
    let mut offset = 0;
    while idx < slices.len() {
        let end = (idx + IOVECS_PER_WRITE_MAX).min(slices.len());
        let mut iov: Vec<libc::iovec> = Vec::with_capacity(end - idx);
        for (i, s) in slices[idx..end].iter().enumerate() {
            let s = if i == 0 { &s[offset..] } else { s };
            iov.push(libc::iovec {
                iov_base: s.as_ptr() as *mut libc::c_void,
                iov_len: s.len(),
            });
        }
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len() as _;
        let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
        let mut sent = if n >= 0 {
            n as usize
        } else {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(e);
            }
            0
        };
        // Advance over what the kernel took.
        while idx < slices.len() && sent > 0 {
            let left = slices[idx].len() - offset;
            if sent >= left {
                sent -= left;
                idx += 1;
                offset = 0;
            } else {
                offset += sent;
                sent = 0;
            }
        }
        while idx < slices.len() && slices[idx].len() == offset {
            idx += 1;
            offset = 0;
        }
        if n < 0
            || (idx < slices.len() && (n as usize) < iov.iter().map(|v| v.iov_len).sum::<usize>())
        {
            // Socket buffer full: wait through the runtime for the current slice.
            if idx < slices.len() {
                writer.write_all(&slices[idx][offset..]).await?;
                idx += 1;
                offset = 0;
            }
        }
    }
    Ok(())
}
