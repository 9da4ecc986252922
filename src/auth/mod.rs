//! Who may connect and what they may receive: API keys ([`keys`]), JWTs
//! ([`jwt`]), entitlements ([`entitlements`]), the `Origin` allow-list, the
//! limit on failed authentications per client IP ([`failures`]) and the
//! audit log ([`audit`]).
//!
//! Everything here is off by default. [`AuthConfig`] holds the checked
//! settings (made from the flags by [`crate::config`]) (no I/O), and [`Access`] the live
//! state built from them at start: the current key set and JWT verifier
//! (swapped together, all or nothing, on [`Access::reload`], with a
//! generation counter the shards watch), the allowed origins, the failure
//! table and the audit log. The socket layer calls
//! [`Access::origin_allowed`], [`Access::admit`] and
//! [`Access::authenticate`] before the upgrade; the shard enforces
//! entitlements on `subscribe` and closes sessions whose credentials were
//! revoked ([`Access::still_valid`]).

pub mod audit;
pub mod entitlements;
pub mod failures;
pub mod jwt;
pub mod keys;

use std::cell::Cell;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use audit::{Audit, Event, Who};
use entitlements::Entitlements;
use failures::FailureLimit;
use jwt::{JwtAlg, JwtVerifier};
use keys::{KeyEntry, KeySet};

/// Counters of authentication ([`crate::auth::Access`]): rare events
/// (per reload, per failed authentication), bumped from any thread.
#[derive(Debug, Default)]
pub struct AuthMetrics {
    /// Reloads of the key file and JWT key (SIGHUP) that took effect.
    pub reloads: AtomicU64,
    /// Reloads refused because a file could not be used (the old state stays).
    pub reload_failures: AtomicU64,
    /// Failed authentications counted against a client IP.
    pub failures: AtomicU64,
    /// Times an IP reached `--auth-max-failures` and was blocked.
    pub blocked_ips: AtomicU64,
    /// Upgrades refused with HTTP 429 from a blocked IP.
    pub rate_limited: AtomicU64,
}

/// Where JWT verification gets its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    /// The pinned algorithm.
    pub alg: JwtAlg,
    /// The secret file (HS256) or the PEM public key (RS256).
    pub key_file: PathBuf,
    /// Required `aud`.
    pub audience: Option<String>,
    /// Required `iss`.
    pub issuer: Option<String>,
}

/// Checked authentication settings. The default is "off": no key, no JWT,
/// any origin, no audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthConfig {
    /// The API-key file.
    pub api_keys: Option<PathBuf>,
    /// JWT verification.
    pub jwt: Option<JwtConfig>,
    /// How long a session may stay unauthenticated. 5 s is enough for a
    /// client to send one message after `welcome` over a slow link, and short
    /// enough that idle unauthenticated sockets do not pile up.
    pub timeout: Duration,
    /// Failed authentications from one IP within `failure_window` that
    /// block it for one window (0: no limit; defaults in [`failures`]).
    pub max_failures: u32,
    /// See `max_failures`.
    pub failure_window: Duration,
    /// Allowed `Origin` values, normalized ([`normalize_origin`]); empty: any.
    pub allowed_origins: Vec<String>,
    /// The audit log file.
    pub audit_log: Option<PathBuf>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            api_keys: None,
            jwt: None,
            timeout: Duration::from_millis(5000),
            max_failures: failures::DEFAULT_MAX_FAILURES,
            failure_window: failures::DEFAULT_WINDOW,
            allowed_origins: Vec::new(),
            audit_log: None,
        }
    }
}

/// An origin as browsers serialize it: lowercase `scheme://host[:port]`,
/// without the scheme's default port and without a trailing `/`. `None`
/// when `s` is not an http(s) origin.
pub fn normalize_origin(s: &str) -> Option<String> {
    let s = s.trim().trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = s.split_once("://")?;
    let default_port = match scheme {
        "http" => ":80",
        "https" => ":443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
        return None;
    }
    let host = rest.strip_suffix(default_port).unwrap_or(rest);
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return None;
    }
    Some(format!("{scheme}://{host}"))
}

/// Why the authentication state could not be built (at start or reload).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct AuthSetupError(pub String);

/// How a principal proved itself.
#[derive(Debug, Clone)]
pub enum Credential {
    /// An API key: this entry of the key file.
    Key(Arc<KeyEntry>),
    /// A JWT expiring at `exp` (Unix seconds).
    Jwt {
        /// Expiry.
        exp: u64,
        /// The token itself, kept to verify it again when a reload brings
        /// a new JWT key (its `Debug` never shows it).
        token: Token,
        /// The JWT key version (bumped by each reload that changes the key) the token was
        /// last verified under. A `Cell` so that [`Access::still_valid`]
        /// can record a successful re-verification: a token is verified
        /// once per key change, not on every housekeeping round.
        verified_under: Cell<u64>,
    },
}

/// An authenticated client.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key id or the token's `sub` (logged; never the secret).
    pub id: Arc<str>,
    /// What it may receive.
    pub entitlements: Arc<Entitlements>,
    /// How it authenticated.
    pub credential: Credential,
}

impl Principal {
    /// Whether the credentials expire by themselves (a JWT's `exp`).
    pub fn expires(&self) -> bool {
        matches!(self.credential, Credential::Jwt { .. })
    }
}

/// Where a session stands with authentication.
#[derive(Debug, Clone)]
pub enum SessionAuth {
    /// Authentication is off: every symbol and channel.
    Off,
    /// Waiting for an `auth` message until `deadline`; nothing else is served.
    Pending {
        /// When the session is closed with 4001.
        deadline: tokio::time::Instant,
    },
    /// Authenticated.
    Ok(Principal),
}

impl SessionAuth {
    /// The entitlements that limit the session (`None`: everything).
    pub fn entitlements(&self) -> Option<&Arc<Entitlements>> {
        match self {
            SessionAuth::Ok(p) => Some(&p.entitlements),
            _ => None,
        }
    }

    /// The principal's id, for the audit log.
    pub fn principal(&self) -> Option<&str> {
        match self {
            SessionAuth::Ok(p) => Some(&p.id),
            _ => None,
        }
    }
}

/// The key material a reload swaps whole: the API-key set and the JWT
/// verifier, read together so that a reload is all or nothing.
#[derive(Default)]
struct Verifiers {
    keys: Option<Arc<KeySet>>,
    jwt: Option<Arc<JwtVerifier>>,
    /// Bumped by every reload that brought a different JWT key; a live
    /// token verified under an older version is verified again.
    jwt_version: u64,
}

impl Verifiers {
    /// Reads the key file and the JWT key; nothing is kept if either fails.
    fn load(
        key_file: Option<&PathBuf>,
        jwt: Option<&JwtConfig>,
    ) -> Result<Verifiers, AuthSetupError> {
        let keys = match key_file {
            Some(path) => Some(Arc::new(KeySet::load(path).map_err(AuthSetupError)?)),
            None => None,
        };
        let jwt = match jwt {
            Some(j) => {
                let at = |e: &dyn std::fmt::Display| {
                    AuthSetupError(format!("{}: {e}", j.key_file.display()))
                };
                let key = std::fs::read(&j.key_file).map_err(|e| at(&e))?;
                // A secret file usually ends with a newline that is not part of it.
                let key = match j.alg {
                    JwtAlg::Hs256 => key.trim_ascii_end().to_vec(),
                    JwtAlg::Rs256 => key,
                };
                let v = JwtVerifier::new(&j.alg, &key, j.audience.as_deref(), j.issuer.as_deref())
                    .map_err(|e| at(&e))?;
                Some(Arc::new(v))
            }
            None => None,
        };
        Ok(Verifiers { keys, jwt, jwt_version: 0 })
    }
}

/// What a successful [`Access::reload`] put in force.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Number of API keys (0 without `--api-keys`).
    pub keys: usize,
    /// Whether the JWT key differs from the one before (live tokens are
    /// then verified again by their shard).
    pub jwt_key_changed: bool,
}

/// The live authentication state of a server. See the module docs.
#[derive(Default)]
pub struct Access {
    key_file: Option<PathBuf>,
    jwt_config: Option<JwtConfig>,
    /// The current key set and JWT verifier, replaced whole by a reload
    /// (readers clone the `Arc`, so a lookup never holds the lock while
    /// hashing or verifying).
    current: RwLock<Arc<Verifiers>>,
    /// Bumped by every successful reload; shards compare it at housekeeping
    /// (every 100 ms) and re-check their sessions' credentials when it moved.
    generation: AtomicU64,
    /// How long a session may stay unauthenticated.
    pub timeout: Duration,
    origins: Vec<String>,
    /// Failed authentications per client IP.
    failures: FailureLimit,
    /// The audit log.
    pub audit: Audit,
    /// Reloads, failures and refusals, for `/metrics`.
    pub metrics: AuthMetrics,
}

impl Access {
    /// Reads the key file, the JWT key and opens the audit log.
    pub fn open(config: &AuthConfig) -> Result<Access, AuthSetupError> {
        let current = Verifiers::load(config.api_keys.as_ref(), config.jwt.as_ref())?;
        let audit = match &config.audit_log {
            Some(path) => Audit::open(path)
                .map_err(|e| AuthSetupError(format!("audit log {}: {e}", path.display())))?,
            None => Audit::default(),
        };
        Ok(Access {
            key_file: config.api_keys.clone(),
            jwt_config: config.jwt.clone(),
            current: RwLock::new(Arc::new(current)),
            generation: AtomicU64::new(0),
            timeout: config.timeout,
            origins: config.allowed_origins.clone(),
            failures: FailureLimit::new(
                config.max_failures,
                config.failure_window,
                failures::TRACKED_IPS,
            ),
            audit,
            metrics: AuthMetrics::default(),
        })
    }

    /// Whether clients must authenticate.
    pub fn required(&self) -> bool {
        self.key_file.is_some() || self.jwt_config.is_some()
    }

    /// Whether a request with this `Origin` header may upgrade. No header
    /// (a non-browser client) is always allowed; with an allow-list, any
    /// other origin (`null` included) is refused.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(o) => normalize_origin(o).is_some_and(|o| self.origins.contains(&o)),
        }
    }

    fn current(&self) -> Arc<Verifiers> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Before an upgrade from `ip`: `Err(retry_after)` while the IP is
    /// blocked for too many failed authentications (counted in
    /// `tickwire_auth_rate_limited_total`).
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        self.failures.check(ip, Instant::now()).inspect_err(|_| {
            self.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        })
    }

    /// A failed authentication (`via` the upgrade or an `auth` message):
    /// written to the audit log and counted against the client's IP; the
    /// failure that reaches the limit also writes an `auth_blocked` line.
    pub fn auth_failed(&self, who: Who<'_>, reason: &str, via: &'static str) {
        self.audit.emit(who, Event::AuthFailure { reason, via });
        self.metrics.failures.fetch_add(1, Ordering::Relaxed);
        let Some(ip) = who.peer.map(|p| p.ip().to_canonical()) else { return };
        if let Some(failures) = self.failures.record(ip, Instant::now()) {
            self.metrics.blocked_ips.fetch_add(1, Ordering::Relaxed);
            let window_ms = self.failures.window().as_millis() as u64;
            tracing::warn!(%ip, failures, window_ms, "too many failed authentications: IP blocked");
            self.audit.emit(who, Event::AuthBlocked { ip, failures, window_ms });
        }
    }

    /// Checks a token (API key or JWT). The error is a short reason for
    /// the audit log; it never quotes the token.
    pub fn authenticate(&self, token: &str) -> Result<Principal, &'static str> {
        if token.is_empty() {
            return Err("empty token");
        }
        let current = self.current();
        if let Some(set) = &current.keys
            && let Some(entry) = set.find(token)
        {
            return Ok(Principal {
                id: entry.id.clone(),
                entitlements: entry.entitlements.clone(),
                credential: Credential::Key(entry),
            });
        }
        let looks_like_jwt = token.bytes().filter(|&b| b == b'.').count() == 2;
        match &current.jwt {
            Some(v) if looks_like_jwt || self.key_file.is_none() => {
                let t = v.verify(token)?;
                Ok(Principal {
                    id: t.subject.into(),
                    entitlements: Arc::new(t.entitlements),
                    credential: Credential::Jwt {
                        exp: t.exp,
                        token: Token(token.to_string()),
                        verified_under: Cell::new(current.jwt_version),
                    },
                })
            }
            _ => Err("unknown API key"),
        }
    }

    /// Re-reads the key file and the JWT key (SIGHUP), all or nothing: if
    /// either cannot be used, both stay as they were. On success the new
    /// keys apply to new connections at once, and within a housekeeping
    /// round (100 ms) shards close the sessions whose key was removed or
    /// changed, or whose token does not verify under a new JWT key. Every
    /// reload is logged and counted in `/metrics`.
    pub fn reload(&self) -> Result<Reloaded, AuthSetupError> {
        if !self.required() {
            tracing::info!("reload: authentication is off, nothing to reload");
            return Ok(Reloaded::default());
        }
        let mut next = match Verifiers::load(self.key_file.as_ref(), self.jwt_config.as_ref()) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.reload_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "auth reload failed; the keys in force stay");
                return Err(e);
            }
        };
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        let jwt_key_changed = match (&current.jwt, &next.jwt) {
            (Some(old), Some(new)) => !old.same_key(new),
            _ => false,
        };
        next.jwt_version = current.jwt_version + u64::from(jwt_key_changed);
        let reloaded =
            Reloaded { keys: next.keys.as_ref().map_or(0, |k| k.len()), jwt_key_changed };
        *current = Arc::new(next);
        drop(current);
        self.generation.fetch_add(1, Ordering::Release);
        self.metrics.reloads.fetch_add(1, Ordering::Relaxed);
        tracing::info!(keys = reloaded.keys, jwt_key_changed, "auth reloaded");
        Ok(reloaded)
    }

    /// Bumped by every reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether `p`'s credentials still hold at `now_s` (Unix seconds): its
    /// key is still in the file unchanged, or its token has not expired and
    /// verifies under the current JWT key (checked again only when the key
    /// changed since the token was last verified).
    pub fn still_valid(&self, p: &Principal, now_s: u64) -> Result<(), &'static str> {
        match &p.credential {
            Credential::Key(entry) => match &self.current().keys {
                Some(set) if set.holds(entry) => Ok(()),
                _ => Err("key revoked"),
            },
            Credential::Jwt { exp, .. } if now_s > exp.saturating_add(jwt::LEEWAY_S) => {
                Err("token expired")
            }
            Credential::Jwt { token, verified_under, .. } => {
                let current = self.current();
                if verified_under.get() == current.jwt_version {
                    return Ok(());
                }
                match &current.jwt {
                    Some(v) if v.verify(&token.0).is_ok() => {
                        verified_under.set(current.jwt_version);
                        Ok(())
                    }
                    _ => Err("token does not verify under the new JWT key"),
                }
            }
        }
    }
}

/// A token or API key as received. Its `Debug` never shows it, so no
/// log line can leak it by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Token(<{} bytes>)", self.0.len())
    }
}

/// The token of an upgrade request: `token=` in the query (percent-decoded)
/// or `Authorization: Bearer`, the header first.
pub fn upgrade_token(query: &str, authorization: Option<&str>) -> Option<String> {
    if let Some(h) = authorization {
        let h = h.trim();
        if h.len() > 7 && h[..7].eq_ignore_ascii_case("bearer ") {
            return Some(h[7..].trim().to_string());
        }
    }
    query.split('&').find_map(|pair| pair.strip_prefix("token=")).map(percent_decode)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) =
                (b.get(i + 1).and_then(|&c| hex(c)), b.get(i + 2).and_then(|&c| hex(c)))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_normalize_like_browsers() {
        // Case, a trailing slash and the default port do not matter.
        assert_eq!(
            normalize_origin("HTTPS://App.Example.com:443/").as_deref(),
            Some("https://app.example.com")
        );
        assert_eq!(
            normalize_origin("http://localhost:8080").as_deref(),
            Some("http://localhost:8080")
        );
        // Anything that is not an http(s) origin is refused.
        for bad in ["null", "file://", "ftp://x", "http://", "http://a/path", "http://a:port"] {
            assert_eq!(normalize_origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn origin_allow_list() {
        let cfg = AuthConfig {
            allowed_origins: vec!["https://app.example.com".into()],
            ..AuthConfig::default()
        };
        let a = Access::open(&cfg).unwrap();
        // No Origin header: not a browser, allowed.
        assert!(a.origin_allowed(None));
        assert!(a.origin_allowed(Some("https://app.example.com")));
        // Scheme, host and port must all match.
        assert!(!a.origin_allowed(Some("http://app.example.com")));
        assert!(!a.origin_allowed(Some("https://app.example.com:8443")));
        assert!(!a.origin_allowed(Some("https://evil.example.com")));
        assert!(!a.origin_allowed(Some("null")));
        // Without a list, any origin is allowed.
        assert!(Access::default().origin_allowed(Some("https://anything")));
    }

    #[test]
    fn a_live_token_is_verified_again_once_per_key_change() {
        let path = std::env::temp_dir().join(format!("tickwire-unit-jwt-{}", std::process::id()));
        let (secret_a, secret_b) = ("a".repeat(32), "b".repeat(32));
        std::fs::write(&path, &secret_a).unwrap();
        let jwt =
            JwtConfig { alg: JwtAlg::Hs256, key_file: path.clone(), audience: None, issuer: None };
        let a = Access::open(&AuthConfig { jwt: Some(jwt), ..AuthConfig::default() }).unwrap();
        let exp = crate::tick::now_ns() / 1_000_000_000 + 600;
        let claims = serde_json::json!({"sub": "u", "exp": exp, "tw": {"symbols": ["*"]}});
        let key = jsonwebtoken::EncodingKey::from_secret(secret_a.as_bytes());
        let token = jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap();
        let p = a.authenticate(&token).unwrap();
        let now_s = exp - 600;
        let under = |p: &Principal| match &p.credential {
            Credential::Jwt { verified_under, .. } => verified_under.get(),
            Credential::Key(_) => unreachable!(),
        };
        let reload = |text: &str| {
            std::fs::write(&path, text).unwrap();
            a.reload().map(|r| r.jwt_key_changed)
        };
        // The same secret (a trailing newline is not part of it): no change.
        assert!(!reload(&format!("{secret_a}\n")).unwrap());
        assert_eq!((a.still_valid(&p, now_s), under(&p)), (Ok(()), 0));
        // Another secret: the token no longer verifies.
        assert!(reload(&secret_b).unwrap());
        assert!(a.still_valid(&p, now_s).is_err());
        // The first one back: it verifies again, and is marked as verified
        // under the current key so the next round does not verify it again.
        assert!(reload(&secret_a).unwrap());
        assert_eq!((a.still_valid(&p, now_s), under(&p)), (Ok(()), 2));
        // A file that cannot be used changes nothing.
        assert!(reload("short").is_err());
        assert_eq!(a.still_valid(&p, now_s), Ok(()));
        assert_eq!(a.metrics.reloads.load(Ordering::Relaxed), 3);
        assert_eq!(a.metrics.reload_failures.load(Ordering::Relaxed), 1);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn a_token_expires_on_a_live_session_after_the_leeway() {
        let p = Principal {
            id: "alice".into(),
            entitlements: Arc::new(Entitlements::everything()),
            credential: Credential::Jwt {
                exp: 1000,
                token: Token("t".into()),
                verified_under: Cell::new(0),
            },
        };
        let a = Access::default();
        // Valid until exp plus the leeway; expired after.
        assert!(p.expires());
        assert_eq!(a.still_valid(&p, 1000 + jwt::LEEWAY_S), Ok(()));
        assert_eq!(a.still_valid(&p, 1001 + jwt::LEEWAY_S), Err("token expired"));
    }

    #[test]
    fn token_from_header_or_query() {
        // The header wins; the query token is percent-decoded.
        assert_eq!(upgrade_token("token=a%2Bb", Some("Bearer xyz")).as_deref(), Some("xyz"));
        assert_eq!(upgrade_token("stamps=1&token=a%2Bb", None).as_deref(), Some("a+b"));
        assert_eq!(upgrade_token("stamps=1", Some("Basic abc")), None);
        assert_eq!(upgrade_token("token=100%", None).as_deref(), Some("100%"));
    }
}
