//! STAGE 4: one accepted connection, from its HTTP request head to its
//! close. HTTP and WebSocket share one port.
//!
//! The acceptor thread hands each accepted socket to a writer shard; on the
//! shard, [`serve`] reads the HTTP request head and routes it:
//!
//! | route | answer |
//! |---|---|
//! | `GET /ws` with an upgrade | a market-data session ([`market`]) |
//! | `GET /ws` without one | 400 |
//! | `GET /` and other files | the dashboard ([`crate::dashboard::asset`]) |
//! | `GET /healthz` | `{"status":"ok",...}` |
//! | `GET /metrics` | Prometheus text ([`crate::metrics::render`]) |
//! | `GET /echo` with an upgrade, only with `--echo-endpoint` | echo ([`echo`], a conformance aid) |
//! | anything else | 404 (405 for methods other than GET/HEAD) |
//!
//! The request head and every plain answer are in [`crate::socket::http`];
//! the upgrade is done by hand (then our own framing in
//! [`crate::socket::ws`]) instead of through hyper: the session then owns
//! the plain `TcpStream` (no boxed upgrade wrapper on the write path), and
//! the handshake deadline lives in one place.
//!
//! With `--tls-cert`/`--tls-key` the port speaks only TLS: [`tls::accept`]
//! runs first, within the same deadline as the request head, and the routes
//! above are then served over it (`https://`, `wss://`). Everything after
//! the handshake is generic over the stream (`TcpStream` or
//! `TlsStream<TcpStream>`) and monomorphized, so plain TCP keeps its
//! unwrapped write path.
//!
//! Before an upgrade, `check_access` applies the `Origin` allow-list,
//! refuses a client IP blocked for failed authentications (HTTP 429) and
//! checks a token that came with the request ([`crate::auth`]).

pub mod echo;
pub mod market;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::auth::audit::{Event, Who};
use crate::auth::{self, SessionAuth};
use crate::feed::Market;
use crate::protocol::json::{Format, TimeUnit};
use crate::socket::http::{Head, accept_response, read_head, respond, respond_with, status_text};
use crate::socket::shared::SessionStream;
use crate::socket::{BIN_PROTOCOL, JSON_PROTOCOL, deflate, limits, tls};
use crate::writer::metrics::ShardCounters;
use crate::writer::shard::Shard;

/// What the HTTP routes need, shared by every shard.
pub struct HttpContext {
    /// Feed state, symbols, latest values.
    pub market: Arc<Market>,
    /// What `/metrics` renders.
    pub metrics: prometheus_client::registry::Registry,
    /// When the server started (for `/healthz`).
    pub started: Instant,
    /// Deadline for the TLS handshake and the request head together
    /// (slowloris guard).
    pub handshake_timeout: Duration,
    /// The TLS acceptor when the port serves TLS (`--tls-cert`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connection limits (refusals are counted there).
    pub limits: Arc<limits::ConnLimits>,
    /// `SO_SNDBUF` for accepted sockets (None: the kernel's autotuning).
    pub send_buffer: Option<usize>,
    /// Source of session ids (`s-1`, `s-2`...), unique across shards.
    pub next_session: AtomicU64,
    /// Authentication, the Origin allow-list and the audit log.
    pub access: Arc<crate::auth::Access>,
    /// Whether `/echo` is served (`--echo-endpoint`); a 404 otherwise.
    pub echo_endpoint: bool,
    /// permessage-deflate settings (`--compression`); `None`: declined.
    pub compression: Option<deflate::Settings>,
}

/// What a connection task gets from its shard.
pub struct ConnContext {
    /// The shard's state.
    pub shard: Rc<RefCell<Shard>>,
    /// Shared HTTP context.
    pub http: Arc<HttpContext>,
    /// Flips to true on shutdown.
    pub shutdown: watch::Receiver<bool>,
}

/// Serves one accepted socket until it closes: the TLS handshake first
/// when the port serves TLS, then the HTTP request.
pub async fn serve(conn: std::net::TcpStream, ctx: ConnContext) {
    let Ok(()) = conn.set_nonblocking(true) else { return };
    let peer = conn.peer_addr().ok();
    if let Some(bytes) = ctx.http.send_buffer {
        let _ = socket2::SockRef::from(&conn).set_send_buffer_size(bytes);
    }
    let Ok(stream) = TcpStream::from_std(conn) else { return };
    let _ = stream.set_nodelay(true);
    let deadline = tokio::time::Instant::now() + ctx.http.handshake_timeout;
    let Some(acceptor) = ctx.http.tls.clone() else {
        return serve_http(stream, peer, deadline, ctx).await;
    };
    match tokio::time::timeout_at(deadline, tls::accept(&acceptor, stream)).await {
        // Boxed: the TLS state machine is large, and inline it would make
        // every plain-TCP connection's future as large as a TLS one.
        Ok(Ok(tls)) => Box::pin(serve_http(tls, peer, deadline, ctx)).await,
        Ok(Err(tls::Refused::NotTls(mut stream))) => {
            tls::HandshakeFailed { reason: &"plain text on the TLS port" }
                .emit(&ctx.shard.borrow().counters().tls_handshake_failures);
            // Read what the peer sent first: closing with unread data would
            // reset the connection and lose the answer.
            let msg = b"this port speaks TLS: use https:// or wss://\n";
            let _ = tokio::time::timeout_at(deadline, async {
                let _ = stream.read(&mut [0u8; 4096]).await;
                respond(&mut stream, 400, "text/plain", msg, false).await
            })
            .await;
        }
        Ok(Err(tls::Refused::Failed(e))) => {
            tls::HandshakeFailed { reason: &e }
                .emit(&ctx.shard.borrow().counters().tls_handshake_failures);
        }
        Err(_) => {
            tls::HandshakeFailed { reason: &"timed out" }
                .emit(&ctx.shard.borrow().counters().tls_handshake_failures);
        }
    }
}

/// Serves the HTTP request on `stream` (plain TCP, or TLS after the
/// handshake); the head must be complete by `deadline`.
async fn serve_http<S>(
    mut stream: S,
    peer: Option<std::net::SocketAddr>,
    deadline: tokio::time::Instant,
    ctx: ConnContext,
) where
    S: SessionStream,
{
    let head = match tokio::time::timeout_at(deadline, read_head(&mut stream)).await {
        Ok(Ok(Some(head))) => head,
        Ok(Ok(None)) => return,
        Ok(Err(status)) => {
            let _ =
                respond(&mut stream, status, "text/plain", status_text(status).as_bytes(), false)
                    .await;
            return;
        }
        Err(_) => {
            let _ = respond(&mut stream, 408, "text/plain", b"request timeout\n", false).await;
            return;
        }
    };
    let head_only = head.method == "HEAD";
    if head.method != "GET" && !head_only {
        count_http(&ctx);
        let _ = respond(&mut stream, 405, "text/plain", b"method not allowed\n", false).await;
        return;
    }
    match head.path.as_str() {
        "/ws" => upgrade(stream, head, peer, ctx, Endpoint::Session).await,
        "/echo" if ctx.http.echo_endpoint => upgrade(stream, head, peer, ctx, Endpoint::Echo).await,
        "/healthz" => {
            count_http(&ctx);
            let m = &ctx.http.market;
            let body = format!(
                "{{\"status\":\"ok\",\"feed\":\"{}\",\"symbols\":{},\"uptime_s\":{}}}\n",
                m.state().0.name(),
                m.symbols.len(),
                ctx.http.started.elapsed().as_secs()
            );
            let _ = respond(&mut stream, 200, "application/json", body.as_bytes(), head_only).await;
        }
        "/metrics" => {
            count_http(&ctx);
            let body = crate::metrics::render(&ctx.http.metrics);
            let (ctype, body) = (crate::metrics::CONTENT_TYPE, body.as_bytes());
            let _ = respond(&mut stream, 200, ctype, body, head_only).await;
        }
        path => {
            count_http(&ctx);
            let _ = match crate::dashboard::asset(path) {
                Some(a) => respond(&mut stream, 200, a.content_type, a.body, head_only).await,
                None => respond(&mut stream, 404, "text/plain", b"not found\n", head_only).await,
            };
        }
    }
}

fn count_http(ctx: &ConnContext) {
    ShardCounters::add(&ctx.shard.borrow().counters().http_requests, 1);
}

/// What an upgraded connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    /// A market-data session (`/ws`).
    Session,
    /// The conformance echo (`/echo`, only with `--echo-endpoint`).
    Echo,
}

async fn upgrade<S>(
    mut stream: S,
    head: Head,
    peer: Option<std::net::SocketAddr>,
    ctx: ConnContext,
    endpoint: Endpoint,
) where
    S: SessionStream,
{
    let (Some(key), true) = (head.ws_key.as_deref(), head.upgrade) else {
        count_http(&ctx);
        let _ =
            respond(&mut stream, 400, "text/plain", b"expected a WebSocket upgrade\n", false).await;
        return;
    };
    if head.ws_version.as_deref() != Some("13") {
        count_http(&ctx);
        let _ = respond(
            &mut stream,
            400,
            "text/plain",
            b"unsupported Sec-WebSocket-Version (need 13)\n",
            false,
        )
        .await;
        return;
    }
    if endpoint == Endpoint::Echo {
        // Same handshake and socket settings as a session, no subprotocol
        // (the echo speaks none; RFC 6455 4.2.2 lets the server pick none).
        let settings = ctx.http.compression.as_ref();
        let deflate = settings.and_then(|s| deflate::negotiate(&head.extensions, s));
        if stream.write_all(accept_response(key, None, deflate.as_ref()).as_bytes()).await.is_ok() {
            echo::run(stream, head.rest, deflate, ctx.shutdown.clone()).await;
        }
        return;
    }
    let mut format = Format::default();
    for pair in head.query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "time_unit" => match TimeUnit::parse(v) {
                Some(tu) => format.time_unit = tu,
                None => {
                    count_http(&ctx);
                    let _ = respond(
                        &mut stream,
                        400,
                        "text/plain",
                        b"time_unit must be ms, us or ns\n",
                        false,
                    )
                    .await;
                    return;
                }
            },
            "stamps" => format.stamps = matches!(v, "1" | "true"),
            _ => {}
        }
    }
    // The client's first offer that the server speaks wins (a client lists
    // its preference first); none offered is JSON without a
    // `Sec-WebSocket-Protocol` header (RFC 6455 4.2.2).
    let known = head.protocols.iter().find_map(|p| match p.as_str() {
        BIN_PROTOCOL => Some(BIN_PROTOCOL),
        JSON_PROTOCOL => Some(JSON_PROTOCOL),
        _ => None,
    });
    let protocol = if head.protocols.is_empty() {
        None
    } else if known.is_some() {
        known
    } else {
        count_http(&ctx);
        let msg = "unsupported subprotocol; offer tickwire.v1.json or tickwire.v1.bin\n";
        let _ = respond(&mut stream, 400, "text/plain", msg.as_bytes(), false).await;
        return;
    };
    format.binary = protocol == Some(BIN_PROTOCOL);
    let Some(auth) = check_access(&mut stream, &head, peer, &ctx).await else { return };
    let deflate =
        ctx.http.compression.as_ref().and_then(|s| deflate::negotiate(&head.extensions, s));
    if stream.write_all(accept_response(key, protocol, deflate.as_ref()).as_bytes()).await.is_err()
    {
        return;
    }
    market::run(stream, head.rest, format, auth, peer, deflate, ctx).await;
}

/// The access checks before an upgrade: the `Origin` allow-list (HTTP 403)
/// and, when authentication is on, the failure limit of the client's IP
/// (HTTP 429 with `Retry-After` while it is blocked) and the token that
/// came with the request (`Authorization: Bearer` or `?token=`; a bad one
/// gets HTTP 401). A request without a token is let through as
/// [`SessionAuth::Pending`]: it must send `auth` within the deadline.
/// `None`: refused (and answered).
async fn check_access<S: AsyncWrite + Unpin>(
    stream: &mut S,
    head: &Head,
    peer: Option<std::net::SocketAddr>,
    ctx: &ConnContext,
) -> Option<SessionAuth> {
    let access = &ctx.http.access;
    let who = Who { peer, ..Who::default() };
    if !access.origin_allowed(head.origin.as_deref()) {
        count_http(ctx);
        let origin = head.origin.as_deref().unwrap_or("");
        access.audit.emit(who, Event::OriginRefused { origin });
        let _ = respond(stream, 403, "text/plain", b"origin not allowed\n", false).await;
        return None;
    }
    if !access.required() {
        return Some(SessionAuth::Off);
    }
    if let Some(peer) = peer
        && let Err(retry_after) = access.admit(peer.ip())
    {
        count_http(ctx);
        // Whole seconds, rounded up: a client that waits this long is let in.
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        let body = b"too many failed authentications from your address; retry later\n";
        let headers = format!("Retry-After: {secs}\r\n");
        let _ = respond_with(stream, 429, &headers, "text/plain", body, false).await;
        return None;
    }
    let Some(token) = auth::upgrade_token(&head.query, head.authorization.as_deref()) else {
        return Some(SessionAuth::Pending {
            deadline: tokio::time::Instant::now() + access.timeout,
        });
    };
    match access.authenticate(&token) {
        Ok(p) => Some(SessionAuth::Ok(p)),
        Err(reason) => {
            count_http(ctx);
            access.auth_failed(who, reason, "upgrade");
            let challenge = "WWW-Authenticate: Bearer error=\"invalid_token\"\r\n";
            let body = b"authentication failed\n";
            let _ = respond_with(stream, 401, challenge, "text/plain", body, false).await;
            None
        }
    }
}
