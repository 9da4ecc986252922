//! Client-to-server messages: parsing a text frame into a [`Request`].
//!
//! Parsing is serde-derived ([`parse`]): a request is a handful of fields
//! and a connection may send 50 a second, so a typed struct costs nothing
//! that matters (about a microsecond for a 10-symbol `subscribe`:
//! `cargo bench --bench parse`) and cannot misread a field. Unknown fields
//! are ignored; `action` and `method` are aliases of `type`. Anything else
//! that is wrong yields a [`BadRequest`] that carries the request `id` when
//! one could be read, so the reply can be matched by the client.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

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
        /// Where the client stopped on an earlier connection.
        resume: Option<Resume>,
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

/// `subscribe.resume`: the epoch of the client's earlier `welcome`, and
/// the last `seq` it handled of each stream it names.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The earlier connection's epoch.
    pub epoch: String,
    /// (channel, symbol, last `seq` handled), in the order sent. Channels
    /// this server does not know are left out (a stream the request does
    /// not subscribe is ignored).
    pub from: Vec<(Channel, String, u64)>,
}

/// Most streams one `resume.from` may name: far more than one message of
/// the default 64 KiB can carry, so only a bloated request meets it.
pub const MAX_RESUME_STREAMS: usize = 16_384;

/// Why a request was refused with error 400.
#[derive(Debug, Clone, PartialEq)]
pub struct BadRequest {
    /// The request's `id`, when it could be read.
    pub id: Option<u64>,
    /// What was wrong, for humans.
    pub msg: String,
}

/// Parses one text frame into a [`Request`].
///
/// Two passes only when the first fails: the second reads nothing but the
/// `id`, so that the `error` reply can name the request.
pub fn parse(text: &[u8]) -> Result<Request, BadRequest> {
    match serde_json::from_slice::<Wire>(text) {
        Ok(wire) => wire.request(),
        Err(e) => {
            let id = serde_json::from_slice::<IdOnly>(text).ok().and_then(|w| w.id);
            let msg = match e.classify() {
                serde_json::error::Category::Data => e.to_string(),
                _ if !text.trim_ascii_start().starts_with(b"{") => {
                    "a request must be a JSON object".to_string()
                }
                _ => format!("malformed JSON: {e}"),
            };
            Err(bad(id, msg))
        }
    }
}

/// A request as it comes, every field optional: [`Wire::request`] checks
/// what each type needs. Unknown fields are ignored.
#[derive(Deserialize)]
struct Wire {
    #[serde(rename = "type", alias = "action", alias = "method")]
    kind: Option<String>,
    #[serde(default, deserialize_with = "id")]
    id: Option<u64>,
    #[serde(default, deserialize_with = "symbols")]
    symbols: Option<Vec<String>>,
    #[serde(default, deserialize_with = "channels")]
    channels: Option<Channels>,
    #[serde(default, deserialize_with = "mode")]
    mode: Option<Mode>,
    #[serde(default, deserialize_with = "max_hz")]
    max_hz: Option<f64>,
    #[serde(default, deserialize_with = "snapshot")]
    snapshot: Option<bool>,
    /// Any JSON, `null` included, echoed as it came.
    #[serde(default, deserialize_with = "any")]
    ts: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "prefix")]
    prefix: Option<String>,
    /// A string, or nothing usable (the `auth` then fails).
    #[serde(default, deserialize_with = "lenient_string")]
    token: Option<String>,
    #[serde(default, deserialize_with = "resume")]
    resume: Option<Resume>,
}

/// What is left of a request that failed: its `id`, if it had a usable one.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default, deserialize_with = "lenient_u64")]
    id: Option<u64>,
}

impl Wire {
    fn request(self) -> Result<Request, BadRequest> {
        let id = self.id;
        let kind = self.kind.ok_or_else(|| bad(id, "missing type"))?;
        match kind.as_str() {
            "subscribe" => Ok(Request::Subscribe {
                id,
                symbols: self.symbols.ok_or_else(|| bad(id, "missing symbols"))?,
                channels: self.channels.unwrap_or(Channels::BOTH),
                mode: self.mode.unwrap_or_default(),
                max_hz: self.max_hz,
                snapshot: self.snapshot.unwrap_or(true),
                resume: self.resume,
            }),
            "unsubscribe" => Ok(Request::Unsubscribe {
                id,
                symbols: self.symbols.ok_or_else(|| bad(id, "missing symbols"))?,
                channels: self.channels.unwrap_or(Channels::BOTH),
            }),
            "ping" => Ok(Request::Ping { id, ts: self.ts.map(|t| t.get().to_string()) }),
            "list" => Ok(Request::List { id, prefix: self.prefix.unwrap_or_default() }),
            "auth" => Ok(Request::Auth { id, token: self.token.map(crate::auth::Token) }),
            other => Err(bad(id, format!("unknown type {:?}", truncate(other, 32)))),
        }
    }
}

fn bad(id: Option<u64>, msg: impl Into<String>) -> BadRequest {
    BadRequest { id, msg: msg.into() }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Deserializes a field as `T` (`null` as absent), or fails with `msg`
/// instead of serde's generic words.
fn field<'de, D, T>(d: D, msg: &'static str) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map_err(|_| D::Error::custom(msg))
}

fn id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    field(d, "id must be an unsigned integer")
}

fn symbols<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    field(d, "symbols must be an array of strings")
}

fn channels<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Channels>, D::Error> {
    let names: Option<Vec<String>> = field(d, "channels must be an array")?;
    let Some(names) = names else { return Ok(None) };
    let mut set = Channels::EMPTY;
    for name in &names {
        let ch = Channel::from_name(name).ok_or_else(|| {
            D::Error::custom(
                "channels may contain only \"quotes\", \"trades\", \"bars_1s\" and \"bars_1m\"",
            )
        })?;
        set = set.with(ch);
    }
    if set.is_empty() {
        return Err(D::Error::custom("channels must not be empty"));
    }
    Ok(Some(set))
}

fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Mode>, D::Error> {
    let msg = "mode must be \"latest\" or \"all\"";
    let name: Option<String> = field(d, msg)?;
    match name.as_deref() {
        None => Ok(None),
        Some("latest") => Ok(Some(Mode::Latest)),
        Some("all") => Ok(Some(Mode::All)),
        Some(_) => Err(D::Error::custom(msg)),
    }
}

fn max_hz<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let msg = "max_hz must be a number > 0";
    match field::<D, f64>(d, msg)? {
        Some(hz) if !(hz > 0.0 && hz.is_finite()) => Err(D::Error::custom(msg)),
        hz => Ok(hz),
    }
}

fn snapshot<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    field(d, "snapshot must be a boolean")
}

fn prefix<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    field(d, "prefix must be a string")
}

/// `resume`: `{"epoch": E, "from": {CHANNEL: {SYMBOL: SEQ}}}`, every `SEQ`
/// an unsigned integer.
fn resume<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Resume>, D::Error> {
    #[derive(Deserialize)]
    struct Raw {
        epoch: String,
        from: serde_json::Map<String, serde_json::Value>,
    }
    let Some(raw) = field::<D, Raw>(
        d,
        "resume must be {\"epoch\": string, \"from\": {channel: {symbol: seq}}}",
    )?
    else {
        return Ok(None);
    };
    let mut from = Vec::new();
    for (ch, streams) in &raw.from {
        let streams = streams.as_object().ok_or_else(|| {
            D::Error::custom(format!(
                "resume.from.{} must be an object of symbol: seq",
                truncate(ch, 32)
            ))
        })?;
        for (sym, seq) in streams {
            let seq = seq.as_u64().ok_or_else(|| {
                D::Error::custom(format!(
                    "resume.from.{}.{} must be an unsigned integer (the last seq handled)",
                    truncate(ch, 32),
                    truncate(sym, 32)
                ))
            })?;
            if let Some(ch) = Channel::from_name(ch) {
                from.push((ch, sym.clone(), seq));
            }
        }
        if from.len() > MAX_RESUME_STREAMS {
            return Err(D::Error::custom(format!(
                "resume.from names more than {MAX_RESUME_STREAMS} streams"
            )));
        }
    }
    Ok(Some(Resume { epoch: raw.epoch, from }))
}

fn any<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_str().map(str::to_string))
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, BadRequest> {
        super::parse(s.as_bytes())
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
                snapshot: true,
                resume: None,
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
        // The ts is echoed as the JSON it was, null included.
        let r = parse(r#"{"method":"ping","id":1,"ts":"abc"}"#).unwrap();
        assert_eq!(r, Request::Ping { id: Some(1), ts: Some("\"abc\"".into()) });
        let r = parse(r#"{"type":"ping","ts":null}"#).unwrap();
        assert_eq!(r, Request::Ping { id: None, ts: Some("null".into()) });
        let r = parse(r#"{"type":"ping"}"#).unwrap();
        assert_eq!(r, Request::Ping { id: None, ts: None });
    }

    #[test]
    fn resume_names_streams_by_channel_and_symbol() {
        let r = parse(
            r#"{"type":"subscribe","symbols":["A"],"resume":{"epoch":"e-7","from":{"quotes":{"A":5,"B":0},"bars":{"A":1}}}}"#,
        )
        .unwrap();
        let Request::Subscribe { resume: Some(resume), .. } = r else { panic!("{r:?}") };
        assert_eq!(resume.epoch, "e-7");
        // A channel this server does not know is ignored, like any stream
        // the request does not subscribe.
        let mut from = resume.from.clone();
        from.sort_by(|a, b| a.1.cmp(&b.1));
        assert_eq!(from, [(Channel::Quotes, "A".into(), 5), (Channel::Quotes, "B".into(), 0)]);
    }

    #[test]
    fn a_bad_resume_is_a_400_naming_the_stream() {
        for (bad, says) in [
            (r#"{"epoch":"e-1","from":{"quotes":{"AAPL":-3}}}"#, "resume.from.quotes.AAPL"),
            (r#"{"epoch":"e-1","from":{"quotes":{"AAPL":1.5}}}"#, "resume.from.quotes.AAPL"),
            (r#"{"epoch":"e-1","from":{"quotes":{"AAPL":"7"}}}"#, "resume.from.quotes.AAPL"),
            (r#"{"epoch":"e-1","from":{"quotes":[1]}}"#, "resume.from.quotes"),
            (r#"{"epoch":5,"from":{}}"#, "resume must be"),
            (r#"[1]"#, "resume must be"),
        ] {
            let text =
                format!(r#"{{"type":"subscribe","id":4,"symbols":["AAPL"],"resume":{bad}}}"#);
            let e = parse(&text).unwrap_err();
            // The request's id survives, and the message says what is wrong.
            assert_eq!(e.id, Some(4), "{bad}");
            assert!(e.msg.contains(says), "{bad}: {}", e.msg);
        }
    }
}
