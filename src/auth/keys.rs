//! The API-key file (`--api-keys FILE`): one JSON object per line, each a
//! key id, the SHA-256 of the key in hex (never the key itself) and its
//! entitlements:
//!
//! ```text
//! # comment lines and blank lines are skipped
//! {"id":"desk-1","sha256":"9f86d0…","symbols":["AAPL","MS*"],"channels":["quotes"]}
//! ```
//!
//! A presented key is hashed once and its digest compared with every
//! entry's in constant time (`subtle`), without stopping at a match, so the
//! time taken says nothing about which entry, or how much of one, matched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::entitlements::Entitlements;

/// One line of the key file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyLine {
    id: String,
    sha256: String,
    symbols: Vec<String>,
    #[serde(default)]
    channels: Option<Vec<String>>,
}

/// One key: its id, digest and entitlements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// The key's name (logged; the key itself never is).
    pub id: Arc<str>,
    digest: [u8; 32],
    /// What the key may receive.
    pub entitlements: Arc<Entitlements>,
}

/// The keys of one version of the key file.
#[derive(Debug, Default)]
pub struct KeySet {
    entries: Vec<Arc<KeyEntry>>,
    by_id: HashMap<Arc<str>, usize>,
}

/// SHA-256 of `key`, in lowercase hex (what the key file stores).
pub fn hash_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl KeySet {
    /// Reads and checks a key file.
    pub fn load(path: &Path) -> Result<KeySet, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        KeySet::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Parses the text of a key file. Errors name the line.
    pub fn parse(text: &str) -> Result<KeySet, String> {
        let mut set = KeySet::default();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |msg: String| format!("line {}: {msg}", n + 1);
            let k: KeyLine = serde_json::from_str(line).map_err(|e| at(e.to_string()))?;
            let digest = unhex(&k.sha256.to_ascii_lowercase())
                .ok_or_else(|| at("sha256 must be 64 hex digits (the key's SHA-256)".into()))?;
            if k.id.is_empty() {
                return Err(at("id must not be empty".into()));
            }
            let entitlements = Entitlements::new(&k.symbols, k.channels.as_deref()).map_err(at)?;
            let id: Arc<str> = k.id.into();
            if set.by_id.contains_key(&id) {
                return Err(at(format!("duplicate id {id:?}")));
            }
            if set.entries.iter().any(|e| e.digest == digest) {
                return Err(at("duplicate key (same sha256 as an earlier line)".into()));
            }
            set.by_id.insert(id.clone(), set.entries.len());
            set.entries.push(Arc::new(KeyEntry {
                id,
                digest,
                entitlements: Arc::new(entitlements),
            }));
        }
        Ok(set)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file held no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry of `key`, if any. Compares the key's digest with every
    /// entry's in constant time.
    pub fn find(&self, key: &str) -> Option<Arc<KeyEntry>> {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.digest.ct_eq(&digest)) {
                found = Some(e.clone());
            }
        }
        found
    }

    /// Whether this set still holds `entry` unchanged (same id, digest and
    /// entitlements): false once the key was removed or edited.
    pub fn holds(&self, entry: &KeyEntry) -> bool {
        self.by_id.get(&entry.id).is_some_and(|&i| *self.entries[i] == *entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, key: &str, symbols: &str) -> String {
        format!(r#"{{"id":"{id}","sha256":"{}","symbols":{symbols}}}"#, hash_key(key))
    }

    #[test]
    fn hash_is_sha256_hex() {
        // The digest of "test" as printed by `printf %s test | sha256sum`.
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn finds_keys_by_digest() {
        let text = format!(
            "# desks\n\n{}\n{}\n",
            line("a", "key-a", r#"["AAPL"]"#),
            line("b", "key-b", r#"["*"]"#)
        );
        let set = KeySet::parse(&text).unwrap();
        // Each key finds its own entry; an unknown key finds none.
        assert_eq!(set.len(), 2);
        assert_eq!(&*set.find("key-a").unwrap().id, "a");
        assert_eq!(&*set.find("key-b").unwrap().id, "b");
        assert!(set.find("key-c").is_none());
        assert!(set.find("").is_none());
    }

    #[test]
    fn holds_tells_a_removed_or_edited_key() {
        let old = KeySet::parse(&line("a", "key-a", r#"["AAPL"]"#)).unwrap();
        let entry = old.find("key-a").unwrap();
        // The same line in a new version still holds the key...
        assert!(KeySet::parse(&line("a", "key-a", r#"["AAPL"]"#)).unwrap().holds(&entry));
        // ...a changed entitlement, a new key under the same id, or no line do not.
        assert!(!KeySet::parse(&line("a", "key-a", r#"["MSFT"]"#)).unwrap().holds(&entry));
        assert!(!KeySet::parse(&line("a", "key-x", r#"["AAPL"]"#)).unwrap().holds(&entry));
        assert!(!KeySet::parse("").unwrap().holds(&entry));
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, says) in [
            ("{\"id\":\"a\"}", "line 1"),
            (r#"{"id":"a","sha256":"xyz","symbols":[]}"#, "64 hex"),
            (&format!("{}\n{}", line("a", "k1", "[]"), line("a", "k2", "[]")), "duplicate id"),
            (&format!("{}\n{}", line("a", "k1", "[]"), line("b", "k1", "[]")), "duplicate key"),
            (&line("a", "k", r#"["A*B"]"#), "pattern"),
            (&format!("\n{}", r#"{"id":"a","sha256":"00","symbols":[],"key":"x"}"#), "line 2"),
        ] {
            let e = KeySet::parse(text).unwrap_err();
            assert!(e.contains(says), "{e:?} should say {says:?}");
        }
    }
}
