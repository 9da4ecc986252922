//! Plain HTTP on the WebSocket port: the request head (parsed with
//! `httparse`), every response the server writes before or instead of an
//! upgrade (the routes' answers, errors, the 503 of a connection over the
//! limits), and the `101 Switching Protocols` of an upgrade.
//!
//! There are four routes and nothing needs keep-alive, so no HTTP framework
//! sits between the shard and its sockets: every plain answer closes the
//! connection (`Connection: close`), and the upgrade hands the session the
//! raw stream. The head limits live here: [`MAX_HEAD`] bytes, 32 headers.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Largest request head accepted.
pub const MAX_HEAD: usize = 8192;

/// A parsed request head.
pub struct Head {
    /// The method (`GET`, `HEAD`...).
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string, without `?`.
    pub query: String,
    /// `Upgrade: websocket` with `Connection: upgrade`.
    pub upgrade: bool,
    /// `Sec-WebSocket-Key`.
    pub ws_key: Option<String>,
    /// `Sec-WebSocket-Version`.
    pub ws_version: Option<String>,
    /// The subprotocols offered, in the client's order.
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` header values, in order.
    pub extensions: Vec<String>,
    /// The `Origin` header (browsers send one).
    pub origin: Option<String>,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// Bytes read past the head (an eager client's first frame).
    pub rest: Vec<u8>,
}

/// The `101 Switching Protocols` answer to a client's `Sec-WebSocket-Key`,
/// with the chosen subprotocol and permessage-deflate agreement.
pub fn accept_response(
    key: &str,
    protocol: Option<&str>,
    deflate: Option<&super::deflate::Agreement>,
) -> String {
    let mut resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
        derive_accept_key(key.as_bytes())
    );
    if let Some(p) = protocol {
        resp.push_str("Sec-WebSocket-Protocol: ");
        resp.push_str(p);
        resp.push_str("\r\n");
    }
    if let Some(d) = deflate {
        resp.push_str("Sec-WebSocket-Extensions: ");
        resp.push_str(&d.response());
        resp.push_str("\r\n");
    }
    resp.push_str("\r\n");
    resp
}

/// Reads and parses the request head. `Ok(None)`: the peer went away.
/// `Err(status)`: answer with that status.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Option<Head>, u16> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| 400u16)?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let target = req.path.unwrap_or("/");
                let (path, query) = target.split_once('?').unwrap_or((target, ""));
                let mut head = Head {
                    method: req.method.unwrap_or("").to_string(),
                    path: path.to_string(),
                    query: query.to_string(),
                    upgrade: false,
                    ws_key: None,
                    ws_version: None,
                    protocols: Vec::new(),
                    extensions: Vec::new(),
                    origin: None,
                    authorization: None,
                    rest: buf[len..].to_vec(),
                };
                let mut connection_upgrade = false;
                for h in req.headers.iter() {
                    let value = String::from_utf8_lossy(h.value);
                    let value = value.trim();
                    if h.name.eq_ignore_ascii_case("upgrade") {
                        head.upgrade = value.eq_ignore_ascii_case("websocket");
                    } else if h.name.eq_ignore_ascii_case("connection") {
                        connection_upgrade =
                            value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
                    } else if h.name.eq_ignore_ascii_case("sec-websocket-key") {
                        head.ws_key = Some(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("sec-websocket-version") {
                        head.ws_version = Some(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("sec-websocket-protocol") {
                        head.protocols.extend(value.split(',').map(|p| p.trim().to_string()));
                    } else if h.name.eq_ignore_ascii_case("sec-websocket-extensions") {
                        head.extensions.push(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("origin") {
                        head.origin = Some(value.to_string());
                    } else if h.name.eq_ignore_ascii_case("authorization") {
                        head.authorization = Some(value.to_string());
                    }
                }
                head.upgrade &= connection_upgrade;
                return Ok(Some(head));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(431);
                }
            }
            Err(httparse::Error::TooManyHeaders) => return Err(431),
            Err(_) => return Err(400),
        }
    }
}

/// The reason phrase of `status`.
pub fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// Writes a complete answer with `body` (only its length for a `HEAD`
/// request) and closes the writing side.
pub async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    respond_with(stream, status, "", content_type, body, head_only).await
}

/// [`respond`] with extra header lines (each ending in `\r\n`).
pub async fn respond_with<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: u16,
    headers: &str,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status} {}\r\n{headers}Content-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        status_text(status),
        body.len()
    );
    let mut out = head.into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    let _ = stream.shutdown().await;
    Ok(())
}

/// The answer to a connection over the connection limits, before any
/// upgrade: 503 with `Retry-After: 1` and `message` as the body.
pub async fn respond_unavailable<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &str,
) -> std::io::Result<()> {
    respond_with(stream, 503, "Retry-After: 1\r\n", "text/plain", message.as_bytes(), false).await
}
