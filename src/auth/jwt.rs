//! JWT verification (`jsonwebtoken`, one algorithm pinned per server).
//!
//! A token is accepted only when its header names the configured algorithm
//! (HS256 or RS256; `none` and every other algorithm are refused), its
//! signature verifies, `exp` is present and in the future, `nbf` (when
//! present) is a number in the past, and `aud`/`iss` match when the server
//! was given `--jwt-audience`/`--jwt-issuer` (they are then required). A
//! claim of the wrong type (`"nbf":"0"`) is refused, not skipped.
//! Entitlements come from the `tw` claim:
//!
//! ```text
//! {"sub":"alice","exp":1795700000,"tw":{"symbols":["AAPL","MS*"],"channels":["quotes"]}}
//! ```

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::entitlements::Entitlements;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_S: u64 = 30;

/// Which algorithm and key verify tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtAlg {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// RSA-SHA256 with a public key (PEM).
    Rs256,
}

/// The claims tickwire reads (the library checks `exp`, `nbf`, `aud`, `iss`).
#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    exp: u64,
    tw: Option<TwClaim>,
}

/// The `tw` claim: entitlements.
#[derive(Deserialize)]
struct TwClaim {
    symbols: Vec<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// A verified token.
#[derive(Debug)]
pub struct Verified {
    /// `sub`, or `"jwt"` when the token has none.
    pub subject: String,
    /// Unix seconds after which the session is closed.
    pub exp: u64,
    /// From the `tw` claim.
    pub entitlements: Entitlements,
}

/// Checks tokens against one key.
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
    /// SHA-256 of the key as given: a reload compares it to tell whether
    /// the key changed (and live tokens must be verified again).
    fingerprint: [u8; 32],
}

impl JwtVerifier {
    /// A verifier for `alg` with `key` (the secret's bytes, or a PEM public
    /// key), checking `aud`/`iss` when given.
    pub fn new(
        alg: &JwtAlg,
        key: &[u8],
        audience: Option<&str>,
        issuer: Option<&str>,
    ) -> Result<JwtVerifier, String> {
        let key_bytes = key;
        let (key, algorithm) = match alg {
            JwtAlg::Hs256 => {
                if key.len() < 32 {
                    return Err("an HS256 secret must be at least 32 bytes".into());
                }
                (DecodingKey::from_secret(key), Algorithm::HS256)
            }
            JwtAlg::Rs256 => (
                DecodingKey::from_rsa_pem(key)
                    .map_err(|e| format!("not an RSA public key: {e}"))?,
                Algorithm::RS256,
            ),
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = LEEWAY_S;
        validation.validate_nbf = true;
        let mut required = vec!["exp"];
        match audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            // A token that names an audience is refused when none is configured.
            None => validation.validate_aud = true,
        }
        if let Some(iss) = issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let fingerprint = Sha256::digest(key_bytes).into();
        Ok(JwtVerifier { key, validation, fingerprint })
    }

    /// Whether `other` verifies with the same key bytes (a reload that
    /// rewrote the file unchanged).
    pub fn same_key(&self, other: &JwtVerifier) -> bool {
        self.fingerprint == other.fingerprint
    }

    /// Verifies `token`. The error is a short reason fit for the audit log
    /// (it never quotes the token).
    pub fn verify(&self, token: &str) -> Result<Verified, &'static str> {
        let data =
            decode::<Claims>(token, &self.key, &self.validation).map_err(|e| reason(e.kind()))?;
        let c = data.claims;
        let tw = c.tw.ok_or("token has no tw claim (entitlements)")?;
        let entitlements = Entitlements::new(&tw.symbols, tw.channels.as_deref())
            .map_err(|_| "token's tw claim is invalid")?;
        Ok(Verified { subject: c.sub.unwrap_or_else(|| "jwt".into()), exp: c.exp, entitlements })
    }
}

fn reason(kind: &ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid (nbf)",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => "algorithm not allowed",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::MissingRequiredClaim(_) => "missing required claim",
        ErrorKind::InvalidClaimFormat(_) => "claim of the wrong type",
        _ => "malformed token",
    }
}
