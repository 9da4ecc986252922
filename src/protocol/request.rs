//! Client-to-server messages: parsing a text frame into a [`Request`].
//!
//! Parsing uses simd-json's borrowed DOM over a reused buffer (simd-json
//! parses in place, so the frame is copied into the buffer first). Unknown
//! fields are ignored; `action` and `method` are aliases of `type`. Anything
//! else that is wrong yields a [`BadRequest`] that carries the request `id`
//! when one could be read, so the reply can be matched by the client.

use simd_json::BorrowedValue as Value;
use simd_json::prelude::*;

use crate::tick::{Channel, Channels};

/// Delivery mode of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Newest value per (channel, symbol), conflated, at most `max_hz`.
    #[default]
    Latest,
    /// Every update in order; `overflow` when the client falls behind.
    All,
}

impl Mode {
    /// The protocol name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Latest => "latest",
            Mode::All => "all",
        }
    }
}

/// A parsed client request.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Add or replace subscriptions.
    Subscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Names as sent (`"*"` for all).
        symbols: Vec<String>,
        /// Channels to subscribe.
        channels: Channels,
        /// Delivery mode.
        mode: Mode,
        /// Rate cap per (channel, symbol) in latest mode.
        max_hz: Option<f64>,
        /// Whether to send snapshots.
        snapshot: bool,
    },
    /// Remove subscriptions.
    Unsubscribe {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Names as sent (`"*"` for all).
        symbols: Vec<String>,
        /// Channels to remove.
        channels: Channels,
    },
    /// Application-level ping.
    Ping {
        /// Echoed in the reply.
        id: Option<u64>,
        /// The client's `ts`, re-encoded as JSON, echoed.
        ts: Option<String>,
    },
    /// List known symbols.
    List {
        /// Echoed in the reply.
        id: Option<u64>,
        /// Only names starting with this.
        prefix: String,
    },
    /// Authentication (accepted and ignored while auth is off).
    Auth {
        /// Echoed in the reply.
        id: Option<u64>,
        /// The API key or JWT (`None` when the message had no string `token`).
        token: Option<crate::auth::Token>,
    },
}

impl Request {
    /// The request's `id`, echoed in its reply.
    pub fn id(&self) -> Option<u64> {
        match self {
            Request::Subscribe { id, .. }
            | Request::Unsubscribe { id, .. }
            | Request::Ping { id, .. }
            | Request::List { id, .. }
            | Request::Auth { id, .. } => *id,
        }
    }
}

/// Why a request was refused with error 400.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The request's `id`, when it could be read.
    pub id: Option<u64>,
    /// What was wrong, for humans.
    pub msg: String,
}

/// Reusable parse state of one connection.
pub struct Parser {
    buf: Vec<u8>,
    buffers: simd_json::Buffers,
}

impl Default for Parser {
    fn default() -> Self {
        Parser { buf: Vec::with_capacity(256), buffers: simd_json::Buffers::new(256) }
    }
}

impl Parser {
    /// Parses one text frame. The buffers keep the size of the largest
    /// request seen (one parser serves a whole shard).
    pub fn parse(&mut self, text: &[u8]) -> Result<Request, BadRequest> {
        self.buf.clear();
        self.buf.extend_from_slice(text);
        let value = simd_json::to_borrowed_value_with_buffers(&mut self.buf, &mut self.buffers)
            .map_err(|e| BadRequest { id: None, msg: format!("malformed JSON: {e}") })?;
        from_value(&value)
    }
}

fn bad(id: Option<u64>, msg: impl Into<String>) -> BadRequest {
    BadRequest { id, msg: msg.into() }
}

fn from_value(v: &Value<'_>) -> Result<Request, BadRequest> {
    if v.as_object().is_none() {
        return Err(bad(None, "a request must be a JSON object"));
    }
    let id = match v.get("id") {
        None => None,
        Some(x) if x.is_null() => None,
        Some(x) => Some(x.as_u64().ok_or_else(|| bad(None, "id must be an unsigned integer"))?),
    };
    let kind = ["type", "action", "method"]
        .iter()
        .find_map(|k| v.get(*k))
        .ok_or_else(|| bad(id, "missing type"))?
        .as_str()
        .ok_or_else(|| bad(id, "type must be a string"))?;
    match kind {
        "subscribe" => {
            let symbols = symbols(v, id)?;
            let channels = channels(v, id)?;
            let mode = match v.get("mode") {
                None => Mode::Latest,
                Some(m) => match m.as_str() {
                    Some("latest") => Mode::Latest,
                    Some("all") => Mode::All,
                    _ => return Err(bad(id, "mode must be \"latest\" or \"all\"")),
                },
            };
            let max_hz = match v.get("max_hz") {
                None => None,
                Some(x) if x.is_null() => None,
                Some(x) => match x.cast_f64() {
                    Some(hz) if hz > 0.0 && hz.is_finite() => Some(hz),
                    _ => return Err(bad(id, "max_hz must be a number > 0")),
                },
            };
            let snapshot = match v.get("snapshot") {
                None => true,
                Some(x) => x.as_bool().ok_or_else(|| bad(id, "snapshot must be a boolean"))?,
            };
            Ok(Request::Subscribe { id, symbols, channels, mode, max_hz, snapshot })
        }
        "unsubscribe" => {
            Ok(Request::Unsubscribe { id, symbols: symbols(v, id)?, channels: channels(v, id)? })
        }
        "ping" => Ok(Request::Ping { id, ts: v.get("ts").map(|t| t.encode()) }),
        "list" => {
            let prefix = match v.get("prefix") {
                None => String::new(),
                Some(p) => {
                    p.as_str().ok_or_else(|| bad(id, "prefix must be a string"))?.to_string()
                }
            };
            Ok(Request::List { id, prefix })
        }
        "auth" => Ok(Request::Auth {
            id,
            token: v
                .get("token")
                .and_then(|t| t.as_str())
                .map(|t| crate::auth::Token(t.to_string())),
        }),
        other => Err(bad(id, format!("unknown type {:?}", truncate(other, 32)))),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn symbols(v: &Value<'_>, id: Option<u64>) -> Result<Vec<String>, BadRequest> {
    let list = v
        .get("symbols")
        .ok_or_else(|| bad(id, "missing symbols"))?
        .as_array()
        .ok_or_else(|| bad(id, "symbols must be an array of strings"))?;
    list.iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(id, "symbols must be an array of strings"))
        })
        .collect()
}

fn channels(v: &Value<'_>, id: Option<u64>) -> Result<Channels, BadRequest> {
    let Some(list) = v.get("channels") else {
        return Ok(Channels::BOTH);
    };
    let list = list.as_array().ok_or_else(|| bad(id, "channels must be an array"))?;
    let mut set = Channels::EMPTY;
    for c in list.iter() {
        let ch = c
            .as_str()
            .and_then(Channel::from_name)
            .ok_or_else(|| bad(id, "channels may contain only \"quotes\" and \"trades\""))?;
        set = set.with(ch);
    }
    if set.is_empty() {
        return Err(bad(id, "channels must not be empty"));
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, BadRequest> {
        Parser::default().parse(s.as_bytes())
    }

    #[test]
    fn subscribe_with_defaults_and_aliases() {
        let r = parse(r#"{"action":"subscribe","symbols":["AAPL"],"extra":1}"#).unwrap();
        // `action` is an alias of `type`, unknown fields are ignored, defaults apply.
        assert_eq!(
            r,
            Request::Subscribe {
                id: None,
                symbols: vec!["AAPL".into()],
                channels: Channels::BOTH,
                mode: Mode::Latest,
                max_hz: None,
                snapshot: true
            }
        );
    }

    #[test]
    fn bad_requests_keep_their_id() {
        // A wrong field type is a 400 that still names the request.
        let e = parse(r#"{"type":"subscribe","id":7,"symbols":"AAPL"}"#).unwrap_err();
        assert_eq!(e.id, Some(7));
        let e = parse(r#"{"type":"subscribe","id":8,"symbols":["A"],"max_hz":0}"#).unwrap_err();
        assert_eq!(e.id, Some(8));
        let e = parse(r#"{"type":"nope","id":9}"#).unwrap_err();
        assert_eq!(e.id, Some(9));
        // Without a readable id there is nothing to echo.
        assert_eq!(parse("{not json").unwrap_err().id, None);
        assert_eq!(parse("[1,2]").unwrap_err().id, None);
        assert_eq!(parse(r#"{"type":"ping","id":-1}"#).unwrap_err().id, None);
    }

    #[test]
    fn ping_echoes_any_ts() {
        // The ts is echoed as the JSON it was.
        let r = parse(r#"{"method":"ping","id":1,"ts":"abc"}"#).unwrap();
        assert_eq!(r, Request::Ping { id: Some(1), ts: Some("\"abc\"".into()) });
    }
}
