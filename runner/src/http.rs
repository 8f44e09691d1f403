//! The dashboard's HTTP server (`wf-runner --http ADDR`): the page and its assets, compiled
//! into the binary, and `/ws`, the control protocol over a WebSocket (the same tungstenite
//! and the same interpreter as the control socket).
//!
//! Loopback by default; any other address only with a token (`WF_HTTP_TOKEN`), which the
//! WebSocket must carry (`/ws?token=…`; browsers cannot set headers on a WebSocket). Every
//! upgrade is checked before it is accepted: a `Host` that is not this server's (DNS
//! rebinding) or an `Origin` that is not the page's (another site in the user's browser) is
//! refused with 403 and the reason.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::server::ServerState;

/// The environment variable holding the dashboard's token.
pub const TOKEN_ENV: &str = "WF_HTTP_TOKEN";
/// Largest request head read, in bytes.
const MAX_HEAD: usize = 16 * 1024;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

const INDEX: &str = include_str!("../assets/dashboard/index.html");
const APP_JS: &str = include_str!("../assets/dashboard/app.js");
const APP_CSS: &str = include_str!("../assets/dashboard/app.css");

/// Refuses a non-loopback address without a token.
pub fn check_address(addr: SocketAddr, token: Option<&str>) -> Result<(), String> {
    if !addr.ip().is_loopback() && token.is_none_or(str::is_empty) {
        return Err(format!(
            "refusing to serve the dashboard on {addr} without a token: anyone who can reach it could steer your agents; set {TOKEN_ENV}, or bind 127.0.0.1"
        ));
    }
    Ok(())
}

/// Binds the dashboard's address; a non-loopback address without a token is refused.
pub async fn bind(addr: SocketAddr, token: Option<&str>) -> anyhow::Result<TcpListener> {
    check_address(addr, token).map_err(anyhow::Error::msg)?;
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} for the dashboard: {e}"))
}

/// Serves the dashboard until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ServerState>,
    token: Option<String>,
    shutdown: CancellationToken,
) {
    let local = listener.local_addr().ok();
    let token = Arc::new(token.filter(|t| !t.is_empty()));
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(%e, "dashboard accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (state, token, shutdown) = (state.clone(), token.clone(), shutdown.clone());
        tokio::spawn(async move {
            if let Err(e) = connection(stream, local, state, &token, shutdown).await {
                tracing::debug!(%e, "dashboard connection ended");
            }
        });
    }
}

/// One request: read its head, then answer it or upgrade it.
async fn connection(
    mut stream: TcpStream,
    local: Option<SocketAddr>,
    state: Arc<ServerState>,
    token: &Option<String>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) | Err(_) => {
            return respond(&mut stream, 400, "text/plain", "bad request\n").await
        }
        Ok(Err(e)) => return Err(e),
    };
    let Some(request) = Request::parse(&head) else {
        return respond(&mut stream, 400, "text/plain", "malformed request\n").await;
    };
    if request.method != "GET" {
        return respond(&mut stream, 405, "text/plain", "only GET is served\n").await;
    }
    match request.path.as_str() {
        "/" | "/index.html" => respond(&mut stream, 200, "text/html; charset=utf-8", INDEX).await,
        "/app.js" => respond(&mut stream, 200, "text/javascript; charset=utf-8", APP_JS).await,
        "/app.css" => respond(&mut stream, 200, "text/css; charset=utf-8", APP_CSS).await,
        "/metrics" => {
            if let Err(why) = request.authorised(token.as_deref()) {
                return respond(&mut stream, 403, "text/plain", &format!("{why}\n")).await;
            }
            let docs = state.store.list_open().await.unwrap_or_default();
            let text = state
                .metrics
                .render(&state.runner_id, state.hub.running(), &docs);
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                &text,
            )
            .await
        }
        "/ws" => {
            if let Err(why) = request.may_upgrade(local, token.as_deref()) {
                tracing::warn!(%why, "dashboard WebSocket refused");
                return respond(&mut stream, 403, "text/plain", &format!("{why}\n")).await;
            }
            let stream = Prefixed {
                head,
                at: 0,
                inner: stream,
            };
            let ws = tokio_tungstenite::accept_async_with_config(
                stream,
                Some(crate::server::ws_config()),
            )
            .await
            .map_err(std::io::Error::other)?;
            crate::server::session(ws, state, shutdown)
                .await
                .map_err(std::io::Error::other)
        }
        _ => respond(&mut stream, 404, "text/plain", "not found\n").await,
    }
}

/// Reads up to the end of the request head; `None` when the client closed first or the head
/// is too large.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

async fn respond(
    stream: &mut TcpStream,
    status: u16,
    kind: &str,
    body: &str,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\
         Content-Security-Policy: default-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'\r\n\
         Referrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body.as_bytes()).await?;
    stream.shutdown().await
}

/// The parts of a request head the server looks at.
#[derive(Debug, PartialEq)]
struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target, version) = (first.next()?, first.next()?, first.next()?);
        if !version.starts_with("HTTP/1.") {
            return None;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let headers = lines
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Request {
            method: method.to_string(),
            path: path.to_string(),
            query: query.to_string(),
            headers,
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the request carries the token, when one is set: `?token=` or
    /// `Authorization: Bearer` (a scraper).
    fn authorised(&self, token: Option<&str>) -> Result<(), String> {
        let Some(want) = token else { return Ok(()) };
        let bearer = self
            .header("authorization")
            .and_then(|a| a.strip_prefix("Bearer "));
        let given = self
            .query
            .split('&')
            .find_map(|kv| kv.strip_prefix("token="))
            .or(bearer)
            .unwrap_or("");
        if constant_time_eq(given.as_bytes(), want.as_bytes()) {
            Ok(())
        } else {
            Err("a token is required: open the dashboard with ?token=…".into())
        }
    }

    /// Whether this upgrade may be accepted: the right token, this server's host, the page's
    /// origin (or none: not a browser).
    fn may_upgrade(&self, local: Option<SocketAddr>, token: Option<&str>) -> Result<(), String> {
        self.authorised(token)?;
        let host = self
            .header("host")
            .ok_or("the request has no Host header")?;
        if let Some(local) = local.filter(|l| l.ip().is_loopback()) {
            let port = local.port();
            let ours = [
                format!("127.0.0.1:{port}"),
                format!("localhost:{port}"),
                format!("[::1]:{port}"),
            ];
            if !ours.iter().any(|h| h.eq_ignore_ascii_case(host)) {
                return Err(format!(
                    "Host {host:?} is not this dashboard (loopback port {port})"
                ));
            }
        }
        if let Some(origin) = self.header("origin") {
            let same = [format!("http://{host}"), format!("https://{host}")];
            if !same.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                return Err(format!(
                    "Origin {origin:?} is not this dashboard's ({host})"
                ));
            }
        }
        Ok(())
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A stream that first yields the bytes already read (the request head), then the socket's.
struct Prefixed {
    head: Vec<u8>,
    at: usize,
    inner: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.head.len() {
            let n = (self.head.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.head[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(host: &str, origin: Option<&str>, query: &str) -> Request {
        let mut head =
            format!("GET /ws?{query} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n");
        if let Some(o) = origin {
            head.push_str(&format!("Origin: {o}\r\n"));
        }
        head.push_str("\r\n");
        Request::parse(head.as_bytes()).unwrap()
    }

    #[test]
    fn upgrades_are_checked_for_host_origin_and_token() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let ok = upgrade("127.0.0.1:8080", Some("http://127.0.0.1:8080"), "");
        assert_eq!(ok.may_upgrade(Some(local), None), Ok(()));
        assert_eq!(
            upgrade("localhost:8080", None, "").may_upgrade(Some(local), None),
            Ok(())
        );
        let foreign = upgrade("127.0.0.1:8080", Some("https://evil.example"), "");
        assert!(foreign
            .may_upgrade(Some(local), None)
            .unwrap_err()
            .contains("Origin"));
        let rebound = upgrade("evil.example:8080", Some("http://evil.example:8080"), "");
        assert!(rebound
            .may_upgrade(Some(local), None)
            .unwrap_err()
            .contains("Host"));
        let remote: SocketAddr = "10.0.0.5:8080".parse().unwrap();
        let tokened = upgrade(
            "10.0.0.5:8080",
            Some("http://10.0.0.5:8080"),
            "a=1&token=s3cret",
        );
        assert_eq!(tokened.may_upgrade(Some(remote), Some("s3cret")), Ok(()));
        let wrong = upgrade("10.0.0.5:8080", None, "token=guess");
        assert!(wrong
            .may_upgrade(Some(remote), Some("s3cret"))
            .unwrap_err()
            .contains("token"));
        assert!(Request::parse(b"GARBAGE\r\n\r\n").is_none());
    }
}
