//! Control messages, server to client: every message that is not a quote,
//! a trade or a snapshot, as one typed enum ([`Control`]) serialized with
//! serde.
//!
//! Why serde here and hand-written JSON for market data
//! ([`super::json`]): control messages are rare (a few per connection,
//! plus one `heartbeat` a second on an idle one), their shapes are many
//! and nested (`subscribed` lists every subscription), and a typed
//! message cannot forget a field or a comma. Market data is a million
//! messages a second of one fixed shape, encoded once and shared.
//!
//! Every message but `welcome` carries its `cseq`; the caller takes it from
//! the session ([`crate::writer::subscriber::Subscriber::next_cseq`]) so
//! that no message can skip or repeat one. Fields whose value is `None`
//! are left out, except `max_hz`, which is `null` when not set (see
//! docs/PROTOCOL.md).

use serde::Serialize;
use serde_json::value::RawValue;

/// A control message. The enum's tag is the message's `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control<'a> {
    /// The first message of every session.
    Welcome {
        /// `s-N`, unique for the server's life.
        session: String,
        /// `tickwire/VERSION`.
        server: &'static str,
        /// `ms`, `us` or `ns`.
        time_unit: &'static str,
        /// Heartbeat interval.
        hb_ms: u64,
        /// Names the feed's current run of sequence numbers.
        epoch: String,
        /// The session's limits.
        limits: Limits,
        /// `"required"` or `"ok"` when authentication is on.
        #[serde(skip_serializing_if = "Option::is_none")]
        auth: Option<&'static str>,
        /// The node's name, when several nodes serve one feed.
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<&'a str>,
    },
    /// The feed's state: after `welcome`, and whenever it changes.
    Status {
        /// This message's position on the connection.
        cseq: u64,
        /// `live`, `stale` or `replay_done`.
        feed: &'static str,
        /// Server time.
        t: u64,
    },
    /// The reply to `subscribe` (also sent unasked on a binary session
    /// when `["*"]` grows, so that every symbol id is named before use).
    Subscribed {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// What was subscribed.
        subs: Vec<Sub<'a>>,
        /// What was refused, and why.
        rejected: Vec<Rejected<'a>>,
    },
    /// The reply to `unsubscribe`.
    Unsubscribed {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// The names removed (`"*"` for a wildcard).
        symbols: Vec<&'a str>,
        /// The channels on which something was removed.
        channels: Vec<&'static str>,
    },
    /// A request that failed, or a condition the client must know.
    Error {
        /// The request's `id`, when the error answers one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// The error code (docs/PROTOCOL.md).
        code: u16,
        /// For humans.
        msg: &'a str,
        /// Whether trying again later may succeed.
        temporary: bool,
    },
    /// The reply to `ping`.
    Pong {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// The request's `ts`, echoed as the JSON it was.
        #[serde(skip_serializing_if = "Option::is_none")]
        ts: Option<&'a RawValue>,
        /// Server time.
        t: u64,
    },
    /// The reply to `list`.
    Symbols {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// The names.
        symbols: Vec<&'a str>,
    },
    /// The connection is not keeping up.
    Slow {
        /// This message's position on the connection.
        cseq: u64,
        /// How long the current write has waited.
        lag_ms: u64,
        /// Bytes waiting for the connection.
        queued_bytes: u64,
        /// `conflating` or `disconnecting`.
        action: &'static str,
    },
    /// Nothing else was sent for `hb_ms`.
    Heartbeat {
        /// This message's position on the connection.
        cseq: u64,
        /// Server time.
        t: u64,
    },
    /// The server is stopping, or the feed's epoch ended; a close follows.
    Shutdown {
        /// This message's position on the connection.
        cseq: u64,
        /// When to reconnect (jittered per session).
        reconnect_after_ms: u64,
    },
    /// Mode all: updates the server had to drop.
    Overflow {
        /// The channel.
        ch: &'static str,
        /// The symbol.
        sym: &'a str,
        /// How many.
        lost: u64,
        /// The first one's `seq`.
        from_seq: u64,
        /// The last one's `seq`.
        to_seq: u64,
        /// This message's position on the connection.
        cseq: u64,
    },
    /// The reply to a successful `auth`.
    Authenticated {
        /// The request's `id`.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<u64>,
        /// This message's position on the connection.
        cseq: u64,
        /// Who the credentials name.
        principal: &'a str,
        /// The symbol patterns they are entitled to.
        symbols: &'a [String],
        /// The channels they are entitled to.
        channels: Vec<&'static str>,
    },
}

/// `welcome.limits`.
#[derive(Debug, Serialize)]
pub struct Limits {
    /// Distinct symbols one connection may subscribe to by name.
    pub symbols: u64,
    /// Inbound messages per second.
    pub msgs_in_per_s: u64,
    /// Largest inbound message.
    pub max_message_bytes: u64,
    /// Recent updates kept per stream for resume.
    pub history: u64,
}

/// One entry of `subscribed.subs`.
#[derive(Debug, Serialize)]
pub struct Sub<'a> {
    /// The channel.
    pub ch: &'static str,
    /// The symbol.
    pub sym: &'a str,
    /// The symbol's id in binary records (`tickwire.v1.bin` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u32>,
    /// The position the stream's next `cf` counts from.
    pub seq: u64,
    /// `latest` or `all`.
    pub mode: &'static str,
    /// The client's `max_hz`, `null` when not set.
    #[serde(serialize_with = "number")]
    pub max_hz: Option<f64>,
    /// For a stream the request's `resume` names: whether every update
    /// after `seq` will be sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// One entry of `subscribed.rejected`.
#[derive(Debug, Serialize)]
pub struct Rejected<'a> {
    /// The name as sent (truncated to 32 characters).
    pub sym: &'a str,
    /// The error code.
    pub code: u16,
    /// For humans.
    pub msg: &'a str,
}

/// A number as a JavaScript client writes it: an integral value without a
/// fraction (`4`, not `4.0`).
fn number<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match *v {
        None => s.serialize_none(),
        Some(x) if x.fract() == 0.0 && x.abs() < 1e15 => s.serialize_i64(x as i64),
        Some(x) => s.serialize_f64(x),
    }
}

impl Control<'_> {
    /// Appends the message, as a JSON object, to `buf` (a frame's array
    /// being built).
    pub fn write(&self, buf: &mut Vec<u8>) {
        // Writing into a Vec cannot fail, and every field serializes.
        serde_json::to_writer(&mut *buf, self).expect("a control message serializes");
    }

    /// The message alone in a frame: `[{...}]`.
    pub fn frame(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(128);
        buf.push(b'[');
        self.write(&mut buf);
        buf.push(b']');
        buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Control) -> String {
        String::from_utf8(m.frame()).unwrap()
    }

    #[test]
    fn messages_are_arrays_of_one_typed_object_in_field_order() {
        // `type` first, then the fields in the order docs/PROTOCOL.md lists them.
        let e = Control::Error { id: Some(7), cseq: 3, code: 404, msg: "nope", temporary: false };
        assert_eq!(
            text(&e),
            r#"[{"type":"error","id":7,"cseq":3,"code":404,"msg":"nope","temporary":false}]"#
        );
        // No id: left out, not null.
        let h = Control::Shutdown { cseq: 9, reconnect_after_ms: 1200 };
        assert_eq!(text(&h), r#"[{"type":"shutdown","cseq":9,"reconnect_after_ms":1200}]"#);
    }

    #[test]
    fn max_hz_is_null_or_a_plain_number() {
        let sub = |max_hz| Sub {
            ch: "quotes",
            sym: "AAPL",
            id: None,
            seq: 5,
            mode: "latest",
            max_hz,
            recovered: None,
        };
        let s = Control::Subscribed {
            id: None,
            cseq: 2,
            subs: vec![sub(None), sub(Some(4.0)), sub(Some(0.5))],
            rejected: vec![Rejected { sym: "NOPE", code: 404, msg: "unknown symbol" }],
        };
        let v: serde_json::Value = serde_json::from_slice(&s.frame()).unwrap();
        assert_eq!(v[0]["subs"][0]["max_hz"], serde_json::Value::Null);
        assert!(text(&s).contains(r#""max_hz":4}"#), "{}", text(&s));
        // `recovered` only for streams a resume named.
        assert!(!text(&s).contains("recovered"));
        assert_eq!(v[0]["subs"][2]["max_hz"], 0.5);
        assert_eq!(v[0]["rejected"][0]["code"], 404);
    }

    #[test]
    fn quoted_text_is_escaped() {
        let e = Control::Error {
            id: None,
            cseq: 1,
            code: 400,
            msg: "bad \"x\"\n\u{1}",
            temporary: false,
        };
        let v: serde_json::Value = serde_json::from_slice(&e.frame()).unwrap();
        // Whatever text a message quotes back, the frame stays valid JSON.
        assert_eq!(v[0]["msg"], "bad \"x\"\n\u{1}");
    }

    #[test]
    fn pong_echoes_ts_as_the_json_it_was() {
        let ts = RawValue::from_string(r#"{"a":[1,"x"]}"#.into()).unwrap();
        let p = Control::Pong { id: None, cseq: 1, ts: Some(&ts), t: 5 };
        assert_eq!(text(&p), r#"[{"type":"pong","cseq":1,"ts":{"a":[1,"x"]},"t":5}]"#);
    }
}
