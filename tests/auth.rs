//! Authentication, entitlements, reloads (SIGHUP), the limit on failed
//! authentications per IP, the Origin allow-list and the audit log
//! (`--api-keys`, `--jwt-*`, `--auth-max-failures`, `--allowed-origins`,
//! `--audit-log`; see the "Authentication" section of docs/PROTOCOL.md).
//!
//! Every refusal test also checks that no market data (`q`, `t`,
//! `snapshot`, `overflow`) reached the client before the refusal.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tickwire::Config;
use tickwire::auth::jwt::JwtAlg;
use tickwire::auth::keys::hash_key;
use tickwire::auth::{AuthConfig, JwtConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

use crate::util::{Client, TIMEOUT, TestServer, manual_server};

const DESK_KEY: &str = "k-desk-7f3a9c1e5b";
const QUOTES_KEY: &str = "k-quotes-2d8e4f6a0c";
const ALL_KEY: &str = "k-all-9b1d3f5e7a";
const SECRET: &str = "tickwire-test-secret-0123456789abcdef";
const NEW_SECRET: &str = "tickwire-rotated-secret-fedcba9876543210";
const RS_PRIVATE: &str = include_str!("fixtures/jwt-rs256-test.key.pem");
const RS_PUBLIC: &str = "tests/fixtures/jwt-rs256-test.pub.pem";
const DATA: [&str; 4] = ["q", "t", "snapshot", "overflow"];

/// A file under the temp dir, removed when dropped.
struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, text: &str) -> Temp {
        let path =
            std::env::temp_dir().join(format!("tickwire-auth-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        Temp(path)
    }

    fn write(&self, text: &str) {
        // Write then rename, as an operator's editor or deploy tool would.
        let tmp = self.0.with_extension("new");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.0).unwrap();
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn key_line(id: &str, key: &str, symbols: Value, channels: Option<Value>) -> String {
    let mut v = json!({"id": id, "sha256": hash_key(key), "symbols": symbols});
    if let Some(c) = channels {
        v["channels"] = c;
    }
    format!("{v}\n")
}

/// The three test keys: `desk` (AAPL and MS*), `quotes` (every symbol,
/// quotes only), `all` (everything).
fn key_file() -> String {
    key_line("desk", DESK_KEY, json!(["AAPL", "MS*"]), None)
        + &key_line("quotes", QUOTES_KEY, json!(["*"]), Some(json!(["quotes"])))
        + &key_line("all", ALL_KEY, json!(["*"]), None)
}

/// Quotes and trades for AAPL, MSFT, MSTR and IBM.
fn seed(ts: &TestServer) {
    for (sym, px) in [("AAPL", 190.0), ("MSFT", 410.0), ("MSTR", 300.0), ("IBM", 150.0)] {
        ts.feed.quote(sym, px, 100, px + 0.02, 200);
        ts.feed.trade(sym, px + 0.01, 50);
    }
    ts.flush();
}

/// A seeded server that requires one of [`key_file`]'s keys.
fn key_server(name: &str, tweak: impl FnOnce(&mut AuthConfig)) -> (TestServer, Temp) {
    let keys = Temp::new(name, &key_file());
    let path = keys.0.clone();
    let ts = manual_server(|c| {
        c.auth.api_keys = Some(path);
        tweak(&mut c.auth);
    });
    seed(&ts);
    (ts, keys)
}

/// A seeded server that accepts HS256 tokens for audience `tw-test`.
fn jwt_server(name: &str, tweak: impl FnOnce(&mut Config)) -> (TestServer, Temp) {
    let secret = Temp::new(name, &format!("{SECRET}\n"));
    let path = secret.0.clone();
    let ts = manual_server(|c| {
        c.auth.jwt = Some(JwtConfig {
            alg: JwtAlg::Hs256,
            key_file: path,
            audience: Some("tw-test".into()),
            issuer: Some("tw-issuer".into()),
        });
        tweak(c);
    });
    seed(&ts);
    (ts, secret)
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Valid claims for [`jwt_server`] with entitlements AAPL, quotes only.
fn claims() -> Value {
    json!({
        "sub": "alice", "aud": "tw-test", "iss": "tw-issuer",
        "exp": now_s() + 600, "nbf": now_s() - 10,
        "tw": {"symbols": ["AAPL"], "channels": ["quotes"]}
    })
}

fn hs256(claims: &Value, secret: &str) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
        .unwrap()
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Reads raw frames until the server closes: (messages, close code).
async fn drain_until_close(c: &mut Client) -> (Vec<Value>, Option<u16>) {
    let mut msgs = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, c.ws.next()).await.expect("close in time") {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                msgs.extend(v.as_array().unwrap().iter().cloned());
            }
            Some(Ok(Message::Close(f))) => return (msgs, f.map(|f| u16::from(f.code))),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (msgs, None),
        }
    }
}

fn assert_no_data(msgs: &[Value]) {
    for m in msgs {
        let t = m["type"].as_str().unwrap_or("");
        assert!(!DATA.contains(&t), "market data before authentication: {m}");
    }
}

/// Asserts the session is open and served: a ping is answered.
async fn assert_open(c: &mut Client, id: u64) {
    let pong = c.request(json!({"type": "ping"}), id).await;
    assert_eq!(pong["type"], "pong", "{pong}");
}

/// Asserts the session gets `error` 401 "credentials revoked", then close
/// 4001, within 1 s of `since`.
async fn assert_revoked(c: &mut Client, since: Instant) {
    let (msgs, code) = drain_until_close(c).await;
    assert!(since.elapsed() < Duration::from_secs(1), "closed after {:?}", since.elapsed());
    assert_eq!(code, Some(4001), "{msgs:?}");
    let err = msgs.iter().find(|m| m["type"] == "error").expect("error before close");
    assert_eq!(
        (err["code"].as_u64(), err["msg"].as_str()),
        (Some(401), Some("credentials revoked"))
    );
}

#[tokio::test]
async fn api_key_in_query_or_header_is_accepted_and_a_bad_one_refused() {
    let (ts, _keys) = key_server("keys-basic", |_| {});
    // A good key in the query or in an Authorization header: the welcome says ok.
    let mut c = Client::connect(ts.addr, &format!("token={DESK_KEY}")).await;
    assert_eq!(c.welcome["auth"], "ok");
    let r = c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    assert_eq!(r["subs"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(c.next().await["type"], "snapshot");
    let bearer = format!("Bearer {ALL_KEY}");
    let c = Client::connect_headers(ts.addr, "", &[("Authorization", &bearer)]).await.unwrap();
    assert_eq!(c.welcome["auth"], "ok");
    // A wrong key, in either place, is refused with HTTP 401 before the upgrade.
    let bad = Client::connect_headers(ts.addr, "token=k-nope", &[]).await;
    assert_eq!(bad.err(), Some(401));
    let bad = Client::connect_headers(ts.addr, "", &[("Authorization", "Bearer k-nope")]).await;
    assert_eq!(bad.err(), Some(401));
    // Neither is a hash of a key: the file's sha256 itself is not a key.
    let hashed = format!("token={}", hash_key(DESK_KEY));
    assert_eq!(Client::connect_headers(ts.addr, &hashed, &[]).await.err(), Some(401));
}

#[tokio::test]
async fn auth_message_authenticates_a_session_without_a_token() {
    let (ts, _keys) = key_server("keys-message", |_| {});
    let mut c = Client::connect(ts.addr, "").await;
    // Without a token the welcome says auth is required...
    assert_eq!(c.welcome["auth"], "required");
    assert_eq!(c.next().await["type"], "status");
    // ...and every other request is answered 401 and dropped.
    let e = c.request(json!({"type": "subscribe", "symbols": ["AAPL"]}), 1).await;
    assert_eq!((e["type"].as_str(), e["code"].as_u64()), (Some("error"), Some(401)), "{e}");
    let e = c.request(json!({"type": "list"}), 2).await;
    assert_eq!(e["code"], 401, "{e}");
    // The auth message: the reply names the principal and its entitlements.
    let a = c.request(json!({"type": "auth", "token": DESK_KEY}), 3).await;
    assert_eq!(a["type"], "authenticated", "{a}");
    assert_eq!(a["principal"], "desk");
    assert_eq!(a["symbols"], json!(["AAPL", "MS*"]));
    // A key without a channel list is entitled to every channel.
    assert_eq!(a["channels"], json!(["quotes", "trades", "bars_1s", "bars_1m"]));
    // Now data flows, and a second auth is a 400.
    c.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"]})).await;
    assert_eq!(c.next().await["type"], "snapshot");
    let e = c.request(json!({"type": "auth", "token": DESK_KEY}), 4).await;
    assert_eq!(e["code"], 400, "{e}");
    // `list` shows only entitled symbols.
    let l = c.request(json!({"type": "list"}), 5).await;
    assert_eq!(l["symbols"], json!(["AAPL", "MSFT", "MSTR"]));
}

#[tokio::test]
async fn bad_token_in_auth_message_gets_402_and_close_4002() {
    let (ts, _keys) = key_server("keys-402", |_| {});
    for auth in [json!({"type": "auth", "token": "k-wrong"}), json!({"type": "auth"})] {
        let mut c = Client::connect(ts.addr, "").await;
        c.send(json!({"type": "subscribe", "symbols": ["*"]})).await;
        c.send(auth.clone()).await;
        ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
        ts.flush();
        let (msgs, code) = drain_until_close(&mut c).await;
        // 401 for the subscribe, 402 for the auth, then close 4002; no data.
        let codes: Vec<u64> = msgs.iter().filter_map(|m| m["code"].as_u64()).collect();
        assert_eq!(codes, [401, 402], "{auth}: {msgs:?}");
        assert_eq!(code, Some(4002), "{auth}");
        assert_no_data(&msgs);
    }
}

#[tokio::test]
async fn no_auth_before_the_deadline_closes_with_4001() {
    let (ts, _keys) = key_server("keys-deadline", |a| a.timeout = Duration::from_millis(300));
    let mut c = Client::connect(ts.addr, "").await;
    let start = Instant::now();
    ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
    ts.flush();
    let (msgs, code) = drain_until_close(&mut c).await;
    // error 401, then close 4001 soon after the deadline; no data.
    assert_eq!(code, Some(4001), "{msgs:?}");
    let err = msgs.iter().find(|m| m["type"] == "error").expect("an error before the close");
    assert_eq!(err["code"], 401);
    assert!(start.elapsed() < Duration::from_millis(900), "closed after {:?}", start.elapsed());
    assert_no_data(&msgs);
}

#[tokio::test]
async fn jwt_missing_expired_forged_alg_none_and_string_nbf_are_refused() {
    // 22 failures from one address: this test is about each refusal, not
    // about the failure limit, which is turned off.
    let (ts, _secret) = jwt_server("jwt-refusals", |c| c.auth.max_failures = 0);
    let good = hs256(&claims(), SECRET);
    let mut expired = claims();
    expired["exp"] = json!(now_s() - 3600);
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    let mut string_nbf = claims();
    string_nbf["nbf"] = json!(format!("{}", now_s() + 3600));
    let mut future_nbf = claims();
    future_nbf["nbf"] = json!(now_s() + 3600);
    let mut wrong_aud = claims();
    wrong_aud["aud"] = json!("someone-else");
    let mut no_iss = claims();
    no_iss.as_object_mut().unwrap().remove("iss");
    let mut no_tw = claims();
    no_tw.as_object_mut().unwrap().remove("tw");
    let payload = b64url(claims().to_string().as_bytes());
    let alg_none = format!("{}.{payload}.", b64url(br#"{"alg":"none","typ":"JWT"}"#));
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &claims(),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    let bad = [
        ("expired", hs256(&expired, SECRET)),
        ("forged", hs256(&claims(), "another-secret-of-at-least-32-bytes!!")),
        ("alg none", alg_none),
        ("string nbf", hs256(&string_nbf, SECRET)),
        ("future nbf", hs256(&future_nbf, SECRET)),
        ("no exp", hs256(&no_exp, SECRET)),
        ("wrong aud", hs256(&wrong_aud, SECRET)),
        ("no iss", hs256(&no_iss, SECRET)),
        ("no tw claim", hs256(&no_tw, SECRET)),
        ("other algorithm", hs512),
        ("garbage", "a.b.c".into()),
    ];
    for (what, token) in &bad {
        // With the upgrade: HTTP 401, no session at all.
        let r = Client::connect_headers(ts.addr, &format!("token={token}"), &[]).await;
        assert_eq!(r.err(), Some(401), "{what} with the upgrade");
        // As an auth message: 402 and close 4002, no data.
        let mut c = Client::connect(ts.addr, "").await;
        c.send(json!({"type": "auth", "token": token})).await;
        c.send(json!({"type": "subscribe", "symbols": ["AAPL"]})).await;
        let (msgs, code) = drain_until_close(&mut c).await;
        assert_eq!(code, Some(4002), "{what}: {msgs:?}");
        assert!(msgs.iter().any(|m| m["code"] == 402), "{what}: {msgs:?}");
        assert_no_data(&msgs);
    }
    // The good token works both ways and carries its entitlements.
    let bearer = format!("Bearer {good}");
    let mut c = Client::connect_headers(ts.addr, "", &[("Authorization", &bearer)]).await.unwrap();
    let r = c.subscribe(json!({"symbols": ["AAPL", "MSFT"]})).await;
    assert_eq!(
        r["subs"],
        json!([{"ch": "quotes", "sym": "AAPL", "seq": 1, "mode": "latest", "max_hz": null}])
    );
    assert_eq!(r["rejected"][0]["code"], 403, "{r}");
    let mut c = Client::connect(ts.addr, "").await;
    let a = c.request(json!({"type": "auth", "token": good}), 1).await;
    assert_eq!(
        (a["type"].as_str(), a["principal"].as_str()),
        (Some("authenticated"), Some("alice"))
    );
}

#[tokio::test]
async fn rs256_is_pinned() {
    let ts = manual_server(|c| {
        c.auth.jwt = Some(JwtConfig {
            alg: JwtAlg::Rs256,
            key_file: RS_PUBLIC.into(),
            audience: None,
            issuer: None,
        })
    });
    seed(&ts);
    let mut cl = claims();
    cl.as_object_mut().unwrap().remove("aud");
    let key = EncodingKey::from_rsa_pem(RS_PRIVATE.as_bytes()).unwrap();
    let good = encode(&Header::new(Algorithm::RS256), &cl, &key).unwrap();
    let c = Client::connect_headers(ts.addr, &format!("token={good}"), &[]).await.unwrap();
    assert_eq!(c.welcome["auth"], "ok");
    // The classic confusion: HS256 keyed with the public key's PEM is refused.
    let pem = std::fs::read(RS_PUBLIC).unwrap();
    let confused =
        encode(&Header::new(Algorithm::HS256), &cl, &EncodingKey::from_secret(&pem)).unwrap();
    let r = Client::connect_headers(ts.addr, &format!("token={confused}"), &[]).await;
    assert_eq!(r.err(), Some(401));
    // A token with an audience is refused when the server expects none.
    cl["aud"] = json!("x");
    let aud = encode(&Header::new(Algorithm::RS256), &cl, &key).unwrap();
    let r = Client::connect_headers(ts.addr, &format!("token={aud}"), &[]).await;
    assert_eq!(r.err(), Some(401));
}

#[tokio::test]
async fn entitlement_patterns_reject_denied_symbols_with_403_and_keep_the_rest() {
    let (ts, _keys) = key_server("keys-patterns", |_| {});
    let mut c = Client::connect(ts.addr, &format!("token={DESK_KEY}")).await;
    let r = c
        .subscribe(json!({"symbols": ["AAPL", "MSFT", "MSTR", "IBM", "MSNOPE", "NOPE"], "channels": ["quotes"], "snapshot": false}))
        .await;
    let subs: Vec<&str> =
        r["subs"].as_array().unwrap().iter().map(|s| s["sym"].as_str().unwrap()).collect();
    // AAPL (exact) and MS* (prefix) are subscribed.
    assert_eq!(subs, ["AAPL", "MSFT", "MSTR"], "{r}");
    // IBM is denied with 403; so is NOPE, although unknown (403 before 404);
    // an entitled but unknown name is 404.
    let rejected: Vec<(&str, u64)> = r["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["sym"].as_str().unwrap(), x["code"].as_u64().unwrap()))
        .collect();
    assert_eq!(rejected, [("IBM", 403), ("MSNOPE", 404), ("NOPE", 403)], "{r}");
    // IBM's updates never arrive; the others do.
    ts.feed.quote("IBM", 151.0, 1, 151.1, 1);
    ts.feed.quote("MSTR", 301.0, 1, 301.1, 1);
    ts.flush();
    let m = c.until(|m| m["type"] == "q").await;
    assert_eq!(m["sym"], "MSTR");
}

#[tokio::test]
async fn wildcard_expands_only_over_entitled_symbols_including_later_ones() {
    let (ts, _keys) = key_server("keys-wild", |_| {});
    let mut c = Client::connect(ts.addr, &format!("token={DESK_KEY}")).await;
    let r = c.subscribe(json!({"symbols": ["*"], "channels": ["quotes"], "snapshot": false})).await;
    let subs: Vec<&str> =
        r["subs"].as_array().unwrap().iter().map(|s| s["sym"].as_str().unwrap()).collect();
    // Only the entitled symbols; the wildcard itself is not rejected.
    assert_eq!(subs, ["AAPL", "MSFT", "MSTR"], "{r}");
    assert_eq!(r["rejected"], json!([]));
    // Symbols that appear later: MSNEW is covered, ZZZ is not.
    ts.feed.quote("ZZZ", 1.0, 1, 1.1, 1);
    ts.feed.quote("MSNEW", 2.0, 1, 2.1, 1);
    ts.feed.quote("ZZZ", 1.2, 1, 1.3, 1);
    ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
    ts.flush();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let m = c.until(|m| m["type"] == "q").await;
        seen.push(m["sym"].as_str().unwrap().to_string());
    }
    seen.sort();
    assert_eq!(seen, ["AAPL", "MSNEW"]);
    // A binary session is told about MSNEW only, by an unsolicited `subscribed`.
    let mut b = Client::connect_binary(ts.addr, &format!("token={DESK_KEY}")).await;
    b.subscribe(json!({"symbols": ["*"], "channels": ["quotes"], "snapshot": false})).await;
    ts.feed.quote("ZZZ2", 1.0, 1, 1.1, 1);
    ts.feed.quote("MSNEW2", 2.0, 1, 2.1, 1);
    ts.flush();
    let m = b.until(|m| m["type"] == "q").await;
    assert_eq!(m["sym"], "MSNEW2");
    assert!(!b.sym_ids.as_ref().unwrap().values().any(|s| s.starts_with("ZZZ")));
}

#[tokio::test]
async fn channel_entitlement_limits_subscriptions_to_quotes() {
    let (ts, _keys) = key_server("keys-channels", |_| {});
    let mut c = Client::connect(ts.addr, &format!("token={QUOTES_KEY}")).await;
    // Both channels asked (the default): only quotes are subscribed.
    let r = c.subscribe(json!({"symbols": ["AAPL"], "snapshot": false})).await;
    let chans: Vec<&str> =
        r["subs"].as_array().unwrap().iter().map(|s| s["ch"].as_str().unwrap()).collect();
    assert_eq!(chans, ["quotes"], "{r}");
    // Trades only: every symbol is refused with 403.
    let r = c.subscribe(json!({"symbols": ["AAPL", "IBM"], "channels": ["trades"]})).await;
    assert_eq!(r["subs"], json!([]));
    assert_eq!(r["rejected"].as_array().unwrap().len(), 2, "{r}");
    assert!(r["rejected"].as_array().unwrap().iter().all(|x| x["code"] == 403));
    // A trade never arrives; the next quote does.
    ts.feed.trade("AAPL", 190.5, 10);
    ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
    ts.flush();
    let m = c.until(|m| DATA.contains(&m["type"].as_str().unwrap())).await;
    assert_eq!(m["type"], "q", "{m}");
}

#[tokio::test]
async fn revoking_a_key_closes_its_live_sessions_within_1s() {
    let (ts, keys) = key_server("keys-revoke", |_| {});
    let mut desk = Client::connect(ts.addr, &format!("token={DESK_KEY}")).await;
    desk.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"], "snapshot": false})).await;
    let mut other = Client::connect(ts.addr, &format!("token={ALL_KEY}")).await;
    other.subscribe(json!({"symbols": ["AAPL"], "channels": ["quotes"], "snapshot": false})).await;
    // Remove the desk key and reload (what SIGHUP does in the binary).
    keys.write(&(key_line("all", ALL_KEY, json!(["*"]), None)));
    let start = Instant::now();
    assert_eq!(ts.server.reload_auth().unwrap().keys, 1);
    // error 401 "credentials revoked", then close 4001, within 1 s.
    assert_revoked(&mut desk, start).await;
    // The other key's session is untouched, and the revoked key is refused.
    ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
    ts.flush();
    assert_eq!(other.until(|m| m["type"] == "q").await["sym"], "AAPL");
    let r = Client::connect_headers(ts.addr, &format!("token={DESK_KEY}"), &[]).await;
    assert_eq!(r.err(), Some(401));
    // A broken file is refused and the keys in force stay.
    keys.write("not json\n");
    assert!(ts.server.reload_auth().is_err());
    assert!(Client::connect_headers(ts.addr, &format!("token={ALL_KEY}"), &[]).await.is_ok());
}

#[tokio::test]
async fn origin_allow_list_refuses_other_browser_origins() {
    let ts = manual_server(|c| {
        c.auth.allowed_origins =
            vec!["https://app.example.com".into(), "http://localhost:3000".into()];
    });
    // Allowed origins (as browsers send them) and no Origin at all connect.
    for origin in ["https://app.example.com", "http://localhost:3000"] {
        assert!(
            Client::connect_headers(ts.addr, "", &[("Origin", origin)]).await.is_ok(),
            "{origin}"
        );
    }
    assert!(Client::connect_headers(ts.addr, "", &[]).await.is_ok());
    // Another scheme, host or port, or `null`, gets HTTP 403 before the upgrade.
    for origin in
        ["http://app.example.com", "https://app.example.com:8443", "https://evil.example", "null"]
    {
        let r = Client::connect_headers(ts.addr, "", &[("Origin", origin)]).await;
        assert_eq!(r.err(), Some(403), "{origin}");
    }
}

#[tokio::test]
async fn audit_log_records_events_and_never_a_token() {
    let audit = Temp::new("audit.jsonl", "");
    let path = audit.0.clone();
    let (ts, _keys) = key_server("keys-audit", |a| a.audit_log = Some(path));
    // A session: connect with a key, a subscribe with a denied name, client close.
    let bearer = format!("Bearer {DESK_KEY}");
    let mut c = Client::connect_headers(ts.addr, "", &[("Authorization", &bearer)]).await.unwrap();
    let session = c.welcome["session"].as_str().unwrap().to_string();
    c.subscribe(json!({"symbols": ["AAPL", "IBM"]})).await;
    let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
    c.ws.send(Message::Close(Some(frame))).await.unwrap();
    let _ = drain_until_close(&mut c).await;
    // A bad key with the upgrade, and a bad key in an auth message.
    let _ = Client::connect_headers(ts.addr, "token=k-bad-upgrade", &[]).await;
    let mut c = Client::connect(ts.addr, "").await;
    c.send(json!({"type": "auth", "token": "k-bad-message"})).await;
    let _ = drain_until_close(&mut c).await;

    let deadline = Instant::now() + TIMEOUT;
    let lines: Vec<Value> = loop {
        let text = std::fs::read_to_string(&audit.0).unwrap();
        let lines: Vec<Value> =
            text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
        if lines.iter().filter(|l| l["event"] == "close").count() >= 2 {
            // Never a token or key, good or bad, nor a key's hash.
            for secret in [DESK_KEY, "k-bad-upgrade", "k-bad-message", &hash_key(DESK_KEY)] {
                assert!(!text.contains(secret), "audit log contains {secret}: {text}");
            }
            break lines;
        }
        assert!(Instant::now() < deadline, "audit lines missing: {text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    let find = |event: &str, extra: &dyn Fn(&Value) -> bool| {
        lines
            .iter()
            .find(|l| l["event"] == event && extra(l))
            .unwrap_or_else(|| panic!("no {event} line in {lines:?}"))
            .clone()
    };
    for l in &lines {
        assert!(l["t"].is_u64() && l["event"].is_string(), "{l}");
    }
    let connect = find("connect", &|l| l["principal"] == "desk");
    assert_eq!(
        (connect["session"].as_str(), connect["auth"].as_str()),
        (Some(&*session), Some("ok"))
    );
    assert!(connect["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{connect}");
    let sub = find("subscribe", &|l| l["session"] == session.as_str());
    assert_eq!(
        (sub["symbols"].clone(), sub["accepted"].as_u64()),
        (json!(["AAPL", "IBM"]), Some(2))
    );
    let denied = find("subscribe_denied", &|_| true);
    assert_eq!(
        (denied["symbols"].clone(), denied["principal"].as_str()),
        (json!(["IBM"]), Some("desk"))
    );
    let close = find("close", &|l| l["session"] == session.as_str());
    assert_eq!((close["code"].as_u64(), close["by"].as_str()), (Some(1000), Some("client")));
    let up = find("auth_failure", &|l| l["via"] == "upgrade");
    assert!(up["peer"].is_string() && up["reason"] == "unknown API key", "{up}");
    let msg = find("auth_failure", &|l| l["via"] == "message");
    let closed = find("close", &|l| l["session"] == msg["session"]);
    assert_eq!((closed["code"].as_u64(), closed["by"].as_str()), (Some(4002), Some("server")));
}

/// A server with both the test keys and HS256 JWTs, on one shard (so a
/// session closed by a reload shows that the shard has checked every
/// session since), and its key file and secret file.
fn keys_and_jwt_server(name: &str) -> (TestServer, Temp, Temp) {
    let keys = Temp::new(&format!("{name}-keys"), &key_file());
    let path = keys.0.clone();
    let (ts, secret) = jwt_server(name, |c| {
        c.shards = 1;
        c.auth.api_keys = Some(path);
    });
    (ts, keys, secret)
}

#[tokio::test]
async fn rotating_the_jwt_secret_closes_old_token_sessions_within_1s() {
    let (ts, _keys, secret) = keys_and_jwt_server("jwt-rotate");
    let old = hs256(&claims(), SECRET);
    // Old-secret sessions: token with the upgrade, and token in `auth`.
    let mut upgrade = Client::connect(ts.addr, &format!("token={old}")).await;
    upgrade.subscribe(json!({"symbols": ["AAPL"], "snapshot": false})).await;
    let mut message = Client::connect(ts.addr, "").await;
    let a = message.request(json!({"type": "auth", "token": old}), 1).await;
    assert_eq!(a["type"], "authenticated", "{a}");
    let mut keyed = Client::connect(ts.addr, &format!("token={ALL_KEY}")).await;
    keyed.subscribe(json!({"symbols": ["AAPL"], "snapshot": false})).await;

    // Rotate the secret and reload (what SIGHUP does in the binary).
    secret.write(&format!("{NEW_SECRET}\n"));
    let start = Instant::now();
    let r = ts.server.reload_auth().unwrap();
    assert_eq!((r.keys, r.jwt_key_changed), (3, true));
    // Both old-token sessions: error 401, close 4001, within 1 s.
    assert_revoked(&mut upgrade, start).await;
    assert_revoked(&mut message, start).await;
    // The API-key session on the same shard is untouched and still served.
    assert_open(&mut keyed, 1).await;
    ts.feed.quote("AAPL", 191.0, 1, 191.1, 1);
    ts.flush();
    assert_eq!(keyed.until(|m| m["type"] == "q").await["sym"], "AAPL");

    // The old token is refused, a token of the new secret accepted.
    let r = Client::connect_headers(ts.addr, &format!("token={old}"), &[]).await;
    assert_eq!(r.err(), Some(401));
    let new = hs256(&claims(), NEW_SECRET);
    let mut fresh = Client::connect(ts.addr, &format!("token={new}")).await;
    assert_eq!(fresh.welcome["auth"], "ok");
    // Rewriting the same secret changes nothing: the new-token session stays.
    secret.write(&format!("{NEW_SECRET}\n"));
    assert!(!ts.server.reload_auth().unwrap().jwt_key_changed);
    assert_open(&mut fresh, 2).await;
    assert_eq!(ts.metric("tickwire_auth_reloads_total").await, 2);
    assert_eq!(ts.metric("tickwire_auth_reload_failures_total").await, 0);
}

#[tokio::test]
async fn a_reload_with_a_broken_file_keeps_the_keys_and_the_jwt_secret_in_force() {
    let (ts, keys, secret) = keys_and_jwt_server("jwt-broken");
    let old = hs256(&claims(), SECRET);
    let new = hs256(&claims(), NEW_SECRET);
    let mut live = Client::connect(ts.addr, &format!("token={old}")).await;

    // A new secret with a broken key file: refused as a whole, so the old
    // secret stays in force although its own file was fine.
    secret.write(&format!("{NEW_SECRET}\n"));
    keys.write("not json\n");
    let e = ts.server.reload_auth().unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    assert!(Client::connect_headers(ts.addr, &format!("token={old}"), &[]).await.is_ok());
    assert_eq!(
        Client::connect_headers(ts.addr, &format!("token={new}"), &[]).await.err(),
        Some(401)
    );
    // A good key file without `all` and a secret too short to use: the
    // keys in force stay too.
    keys.write(&key_line("desk", DESK_KEY, json!(["AAPL"]), None));
    secret.write("short\n");
    let e = ts.server.reload_auth().unwrap_err();
    assert!(e.to_string().contains("32 bytes"), "{e}");
    assert!(Client::connect_headers(ts.addr, &format!("token={ALL_KEY}"), &[]).await.is_ok());
    assert!(Client::connect_headers(ts.addr, &format!("token={old}"), &[]).await.is_ok());
    assert_eq!(ts.metric("tickwire_auth_reload_failures_total").await, 2);
    assert_eq!(ts.metric("tickwire_auth_reloads_total").await, 0);

    // The live session was never disturbed; once both files are good, the
    // rotation takes effect and closes it.
    assert_open(&mut live, 1).await;
    secret.write(&format!("{NEW_SECRET}\n"));
    let start = Instant::now();
    assert_eq!(ts.server.reload_auth().unwrap().keys, 1);
    assert_revoked(&mut live, start).await;
    assert!(Client::connect_headers(ts.addr, &format!("token={new}"), &[]).await.is_ok());
    assert_eq!(ts.metric("tickwire_auth_reloads_total").await, 1);
}

/// An upgrade the server must refuse before upgrading: its HTTP status,
/// `Retry-After` header and body.
async fn refused_upgrade(addr: std::net::SocketAddr, query: &str) -> (u16, Option<String>, String) {
    use tokio_tungstenite::tungstenite::Error;
    let url = format!("ws://{addr}/ws?{query}");
    let answer = tokio::time::timeout(TIMEOUT, tokio_tungstenite::connect_async(url))
        .await
        .expect("an answer in time");
    match answer {
        Err(Error::Http(resp)) => {
            let retry = resp.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default());
            (resp.status().as_u16(), retry, body.into_owned())
        }
        Err(e) => panic!("refused without an HTTP answer: {e}"),
        Ok(_) => panic!("the upgrade was accepted"),
    }
}

#[tokio::test]
async fn failed_authentications_from_one_ip_get_429_until_the_window_passes() {
    let audit = Temp::new("audit-blocked.jsonl", "");
    let path = audit.0.clone();
    let window = Duration::from_secs(1);
    let (ts, _keys) = key_server("keys-limit", |a| {
        a.max_failures = 3;
        a.failure_window = window;
        a.audit_log = Some(path);
    });
    let good = format!("token={ALL_KEY}");
    // One failure in each way a token arrives: the query, the header...
    assert_eq!(Client::connect_headers(ts.addr, "token=k-guess-1", &[]).await.err(), Some(401));
    let bearer = [("Authorization", "Bearer k-guess-2")];
    assert_eq!(Client::connect_headers(ts.addr, "", &bearer).await.err(), Some(401));
    // ...a good key in between gets in, and does not reset the count...
    assert_eq!(Client::connect(ts.addr, &good).await.welcome["auth"], "ok");
    // ...and an `auth` message, closed as always (402, then 4002).
    let mut c = Client::connect(ts.addr, "").await;
    let third = Instant::now();
    c.send(json!({"type": "auth", "token": "k-guess-3"})).await;
    let (msgs, code) = drain_until_close(&mut c).await;
    assert_eq!(code, Some(4002), "{msgs:?}");
    assert!(msgs.iter().any(|m| m["code"] == 402), "{msgs:?}");

    // Blocked: the next upgrades, good key or none, get HTTP 429 with
    // Retry-After before any upgrade (so before any market data).
    for query in [good.as_str(), ""] {
        let (status, retry, body) = refused_upgrade(ts.addr, query).await;
        assert_eq!((status, retry.as_deref()), (429, Some("1")), "{body}");
        assert!(body.contains("too many failed authentications"), "{body}");
    }
    // The plain HTTP routes stay open to the address; the counters say why.
    assert_eq!(ts.metric("tickwire_auth_failures_total").await, 3);
    assert_eq!(ts.metric("tickwire_auth_blocked_ips_total").await, 1);
    assert_eq!(ts.metric("tickwire_auth_rate_limited_total").await, 2);
    // The audit log has one line for the block (written before the 4002).
    let text = std::fs::read_to_string(&audit.0).unwrap();
    let blocked: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["event"] == "auth_blocked")
        .collect();
    assert_eq!(blocked.len(), 1, "{text}");
    assert_eq!(
        (
            blocked[0]["ip"].as_str(),
            blocked[0]["failures"].as_u64(),
            blocked[0]["window_ms"].as_u64()
        ),
        (Some("127.0.0.1"), Some(3), Some(1000))
    );

    // Once the window has passed, the good key gets in again (polled: each
    // refused attempt is another 429, never a failure).
    let deadline = Instant::now() + TIMEOUT;
    let c = loop {
        match Client::connect_headers(ts.addr, &good, &[]).await {
            Ok(c) => break c,
            Err(429) => {}
            Err(status) => panic!("HTTP {status} while blocked"),
        }
        assert!(Instant::now() < deadline, "still blocked after {:?}", third.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(third.elapsed() >= window, "let in after {:?}", third.elapsed());
    assert_eq!(c.welcome["auth"], "ok");
    assert_eq!(ts.metric("tickwire_auth_failures_total").await, 3);
}
