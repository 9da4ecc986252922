//! The audit log (`--audit-log FILE`): one JSON object per line per event,
//! appended and flushed as it happens.
//!
//! Every line has `t` (Unix milliseconds), `event`, and where known
//! `session` (`s-N`, as in `welcome`), `peer` (client address) and
//! `principal` (the key id or the token's `sub`). Events:
//!
//! | event | when | extra fields |
//! |---|---|---|
//! | `connect` | a WebSocket session opened | `auth`: `off`, `ok` (token with the upgrade) or `required` |
//! | `auth` | an `auth` message succeeded | |
//! | `auth_failure` | a bad token (upgrade or `auth`), or no `auth` before the deadline | `reason`, `via` |
//! | `auth_blocked` | a client IP reached `--auth-max-failures`; its upgrades get HTTP 429 for one window | `ip`, `failures`, `window_ms` |
//! | `origin_refused` | an `Origin` not on `--allowed-origins` (HTTP 403) | `origin` |
//! | `subscribe` | a `subscribe` was applied | `symbols` (as requested, at most 64), `channels`, `accepted` |
//! | `subscribe_denied` | symbols of a `subscribe` refused with 403 | `symbols`, `code` |
//! | `revoked` | a live session's key was removed, its token expired, or its token does not verify under a reloaded JWT key | `reason` |
//! | `slow_disconnect` | the slow-client policy closed a session | `lag_ms` |
//! | `close` | a session ended | `code`, `by` (`server`, `client`, or `network` with 1006) |
//!
//! Tokens and keys are never written: no event takes one. Events are rare
//! (per connection or per request, never per tick), so a mutex around one
//! line-buffered file is enough.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Mutex;

use serde_json::{Map, Value, json};

/// Who an event is about.
#[derive(Debug, Clone, Copy, Default)]
pub struct Who<'a> {
    /// Session number (`s-N`).
    pub session: Option<u64>,
    /// Client address.
    pub peer: Option<SocketAddr>,
    /// Key id or token subject.
    pub principal: Option<&'a str>,
}

/// One audit event. See the module docs for the fields each one writes.
#[derive(Debug)]
pub enum Event<'a> {
    /// A session opened; `auth` is `off`, `ok` or `required`.
    Connect {
        /// How the session stands with authentication.
        auth: &'static str,
    },
    /// An `auth` message succeeded.
    Auth,
    /// Authentication failed.
    AuthFailure {
        /// Why (never the token).
        reason: &'a str,
        /// `upgrade` or `message` or `timeout`.
        via: &'static str,
    },
    /// A client IP reached the failure limit and is blocked.
    AuthBlocked {
        /// The blocked address.
        ip: IpAddr,
        /// Failures counted in its window.
        failures: u32,
        /// How long it is blocked.
        window_ms: u64,
    },
    /// An `Origin` was refused.
    OriginRefused {
        /// The header's value.
        origin: &'a str,
    },
    /// A subscription was applied.
    Subscribe {
        /// Names as requested.
        symbols: &'a [String],
        /// Channels applied.
        channels: Vec<&'static str>,
        /// (channel, symbol) entries added or updated.
        accepted: usize,
    },
    /// Symbols refused with 403.
    SubscribeDenied {
        /// The refused names.
        symbols: Vec<&'a str>,
    },
    /// A live session lost its credentials.
    Revoked {
        /// Why.
        reason: &'static str,
    },
    /// The slow-client policy closed a session.
    SlowDisconnect {
        /// How long its write had waited.
        lag_ms: u64,
    },
    /// A session ended.
    Close {
        /// The close code (1006 when the connection just dropped).
        code: u16,
        /// `server`, `client` or `network`.
        by: &'static str,
    },
}

/// Most requested names written per `subscribe` line.
const MAX_LOGGED_SYMBOLS: usize = 64;

/// The audit log; a no-op when no file was given.
#[derive(Debug, Default)]
pub struct Audit {
    out: Option<Mutex<std::io::LineWriter<std::fs::File>>>,
}

impl Audit {
    /// Appends to `path` (created if missing).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Audit { out: Some(Mutex::new(std::io::LineWriter::new(file))) })
    }

    /// Whether events are written anywhere.
    pub fn enabled(&self) -> bool {
        self.out.is_some()
    }

    /// Writes one line for `event`.
    pub fn emit(&self, who: Who<'_>, event: Event<'_>) {
        let Some(out) = &self.out else { return };
        let mut m = Map::new();
        m.insert("t".into(), json!(crate::tick::now_ns() / 1_000_000));
        let (name, extra) = match event {
            Event::Connect { auth } => ("connect", json!({ "auth": auth })),
            Event::Auth => ("auth", json!({})),
            Event::AuthFailure { reason, via } => {
                ("auth_failure", json!({ "reason": reason, "via": via }))
            }
            Event::AuthBlocked { ip, failures, window_ms } => (
                "auth_blocked",
                json!({ "ip": ip.to_string(), "failures": failures, "window_ms": window_ms }),
            ),
            Event::OriginRefused { origin } => {
                let origin: String = origin.chars().take(256).collect();
                ("origin_refused", json!({ "origin": origin }))
            }
            Event::Subscribe { symbols, channels, accepted } => {
                let shown: Vec<&str> =
                    symbols.iter().take(MAX_LOGGED_SYMBOLS).map(|s| truncate(s)).collect();
                let more = symbols.len().saturating_sub(MAX_LOGGED_SYMBOLS);
                let mut v = json!({ "symbols": shown, "channels": channels, "accepted": accepted });
                if more > 0 {
                    v["symbols_not_shown"] = json!(more);
                }
                ("subscribe", v)
            }
            Event::SubscribeDenied { symbols } => {
                let shown: Vec<&str> =
                    symbols.iter().take(MAX_LOGGED_SYMBOLS).map(|s| truncate(s)).collect();
                ("subscribe_denied", json!({ "symbols": shown, "code": 403 }))
            }
            Event::Revoked { reason } => ("revoked", json!({ "reason": reason })),
            Event::SlowDisconnect { lag_ms } => ("slow_disconnect", json!({ "lag_ms": lag_ms })),
            Event::Close { code, by } => ("close", json!({ "code": code, "by": by })),
        };
        m.insert("event".into(), json!(name));
        if let Some(s) = who.session {
            m.insert("session".into(), json!(format!("s-{s}")));
        }
        if let Some(p) = who.peer {
            m.insert("peer".into(), json!(p.to_string()));
        }
        if let Some(p) = who.principal {
            m.insert("principal".into(), json!(p));
        }
        if let Value::Object(extra) = extra {
            m.extend(extra);
        }
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        if let Ok(mut f) = out.lock()
            && let Err(e) = f.write_all(line.as_bytes())
        {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

/// A requested name as logged: at most 32 characters (names come from
/// clients and may be anything).
fn truncate(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
