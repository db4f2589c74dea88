//! The admin HTTP port (`--admin-listen`, default 127.0.0.1:9644 as Redpanda's admin
//! API): `GET /metrics` (Prometheus text format, every shard's counters gathered through
//! the router) and `GET /health` (200 when every shard serves, 503 otherwise, a short JSON
//! body either way).
//!
//! Runs on: shard 0 only. A small HTTP/1.1 server: one request per connection
//! (`Connection: close`), the request head bounded in bytes (`ADMIN_HEAD_MAX_BYTES`) and
//! time (`ADMIN_REQUEST_TIMEOUT`, also the bound on writing the response), at most `ADMIN_CONNECTIONS_MAX` connections at once. The
//! parsing is pure (`parse_head`) and tested on its own.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use crate::shard::Shard;

/// Bytes of a request line plus headers accepted; a longer head is answered 431.
pub const ADMIN_HEAD_MAX_BYTES: usize = 8 << 10;
/// Time a client has to send its request head, and again to take the response.
pub const ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Admin connections served at once; more are closed at accept.
pub const ADMIN_CONNECTIONS_MAX: usize = 16;
/// How long /health waits for each shard's answer before counting it as not serving.
pub const HEALTH_SHARD_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a request head was refused (the HTTP status to answer).
#[derive(Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not an HTTP/1.x request line.
    BadRequest,
    /// 431: the head exceeds ADMIN_HEAD_MAX_BYTES.
    TooLarge,
}

/// Parses the request line of a complete head (through the blank line): (method, path
/// without query string).
pub fn parse_head(head: &[u8]) -> Result<(&str, &str), HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::BadRequest)?;
    let line = text.split("\r\n").next().ok_or(HeadError::BadRequest)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadRequest);
    };
    if method.is_empty() || !target.starts_with('/') || !version.starts_with("HTTP/1.") {
        return Err(HeadError::BadRequest);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok((method, path))
}

/// Where the head ends (index just past "\r\n\r\n"), if it is complete.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Accepts admin connections until shutdown.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener) {
    let active = Rc::new(Cell::new(0usize));
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            shard.shutdown.notified().await;
            None
        })
        .await;
        let Some(accepted) = accepted else {
            return;
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                log::warn!("admin: accept failed: {e}");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if active.get() >= ADMIN_CONNECTIONS_MAX {
            log::warn!("admin: refusing a connection: {ADMIN_CONNECTIONS_MAX} already open");
            continue;
        }
        active.set(active.get() + 1);
        let (s, a) = (shard.clone(), active.clone());
        glommio::spawn_local(async move {
            if let Err(e) = handle(&s, stream).await {
                log::debug!("admin: connection ended: {e}");
            }
            a.set(a.get() - 1);
        })
        .detach();
    }
}

async fn read_head(stream: &mut TcpStream) -> Result<Vec<u8>, HeadError> {
    let mut buf = vec![0u8; ADMIN_HEAD_MAX_BYTES];
    let mut got = 0;
    loop {
        if let Some(end) = head_end(&buf[..got]) {
            buf.truncate(end);
            return Ok(buf);
        }
        if got == buf.len() {
            return Err(HeadError::TooLarge);
        }
        match stream.read(&mut buf[got..]).await {
            Ok(0) | Err(_) => return Err(HeadError::BadRequest),
            Ok(n) => got += n,
        }
    }
}

async fn handle(shard: &Rc<Shard>, mut stream: TcpStream) -> std::io::Result<()> {
    let head = glommio::timer::timeout(ADMIN_REQUEST_TIMEOUT, async {
        Ok(read_head(&mut stream).await)
    })
    .await;
    let head = match head {
        Ok(h) => h,
        // Too slow: close without an answer.
        Err(_) => return Ok(()),
    };
    let (status, content_type, body) = match &head {
        Err(HeadError::BadRequest) => (400, "text/plain", "bad request\n".to_string()),
        Err(HeadError::TooLarge) => (
            431,
            "text/plain",
            "request header fields too large\n".to_string(),
        ),
        Ok(h) => match parse_head(h) {
            Err(_) => (400, "text/plain", "bad request\n".to_string()),
            Ok(("GET", "/metrics")) => {
                let snaps = crate::metrics::gather(shard).await;
                (
                    200,
                    "text/plain; version=0.0.4; charset=utf-8",
                    crate::metrics::render(&snaps),
                )
            }
            Ok(("GET", "/health")) => {
                let (ok, body) = health(shard).await;
                (if ok { 200 } else { 503 }, "application/json", body)
            }
            Ok((_, "/metrics" | "/health")) => {
                (405, "text/plain", "method not allowed\n".to_string())
            }
            Ok(_) => (
                404,
                "text/plain",
                "not found: GET /metrics or /health\n".to_string(),
            ),
        },
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Service Unavailable",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    // A client that stops reading must not hold one of the ADMIN_CONNECTIONS_MAX slots.
    glommio::timer::timeout(ADMIN_REQUEST_TIMEOUT, async {
        stream.write_all(response.as_bytes()).await?;
        stream.close().await?;
        Ok(())
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Asks every shard whether it serves (each within HEALTH_SHARD_TIMEOUT): true when all
/// do, with the JSON body.
async fn health(shard: &Rc<Shard>) -> (bool, String) {
    let mut tasks = Vec::with_capacity(shard.count);
    for to in 0..shard.count {
        let me = shard.clone();
        tasks.push(glommio::spawn_local(async move {
            let call = async {
                Ok(me
                    .call(to, |s| async move { s.serving() })
                    .await
                    .unwrap_or(false))
            };
            glommio::timer::timeout(HEALTH_SHARD_TIMEOUT, call)
                .await
                .unwrap_or(false)
        }));
    }
    let mut not_serving = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if !t.await {
            not_serving.push(i);
        }
    }
    let ok = not_serving.is_empty();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "unavailable" },
        "shards": shard.count,
        "serving": shard.count - not_serving.len(),
        "not_serving": not_serving,
        "isolated_from_quorum": shard.isolated(),
    });
    (ok, format!("{body}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The request line is taken apart into method and path (query dropped); anything that
    // is not an HTTP/1.x request line is refused, and a head ends at its blank line.
    #[test]
    fn request_heads() {
        assert_eq!(
            parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Ok(("GET", "/metrics"))
        );
        assert_eq!(
            parse_head(b"GET /health?verbose=1 HTTP/1.0\r\n\r\n"),
            Ok(("GET", "/health"))
        );
        assert_eq!(
            parse_head(b"GET /metrics\r\n\r\n"),
            Err(HeadError::BadRequest)
        );
        assert_eq!(
            parse_head(b"GET metrics HTTP/1.1\r\n\r\n"),
            Err(HeadError::BadRequest)
        );
        assert_eq!(
            parse_head(b"GET /metrics SPDY/3\r\n\r\n"),
            Err(HeadError::BadRequest)
        );
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), Err(HeadError::BadRequest));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
