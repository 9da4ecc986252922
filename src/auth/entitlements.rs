//! What one principal (an API key or a JWT subject) may receive: symbol
//! patterns and channels. The shard asks [`Entitlements::allows_symbol`]
//! once per symbol when a subscription is made or a `["*"]` subscription
//! meets a new symbol, never per tick: an entitlement check costs nothing
//! on the data path.

use crate::tick::Channel;
use crate::tick::Channels;

/// One symbol pattern of an entitlement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every symbol.
    Any,
    /// `AAPL`: exactly this name.
    Exact(Box<str>),
    /// `MS*`: every name that starts with `MS`.
    Prefix(Box<str>),
}

impl Pattern {
    /// Parses `*`, `NAME` or `PREFIX*`. A `*` anywhere but at the end, or
    /// an empty name, is refused.
    pub fn parse(s: &str) -> Result<Pattern, String> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.is_empty() || body.contains('*') || !crate::tick::valid_symbol(body) {
            return Err(format!(
                "symbol pattern {s:?} must be *, a symbol name, or a name prefix followed by *"
            ));
        }
        Ok(if prefix { Pattern::Prefix(body.into()) } else { Pattern::Exact(body.into()) })
    }

    /// Whether `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(n) => **n == *name,
            Pattern::Prefix(p) => name.starts_with(&**p),
        }
    }
}

/// Symbol patterns and channels one principal is entitled to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entitlements {
    patterns: Vec<Pattern>,
    /// The patterns as written, for the `authenticated` reply.
    written: Vec<String>,
    channels: Channels,
}

impl Entitlements {
    /// Every symbol on every channel (what a session gets while
    /// authentication is off).
    pub fn everything() -> Entitlements {
        Entitlements {
            patterns: vec![Pattern::Any],
            written: vec!["*".into()],
            channels: Channels::ALL,
        }
    }

    /// Parses patterns and channel names (`None`: every channel, bars
    /// included; a list allows only the channels it names).
    pub fn new(symbols: &[String], channels: Option<&[String]>) -> Result<Entitlements, String> {
        let patterns = symbols.iter().map(|s| Pattern::parse(s)).collect::<Result<Vec<_>, _>>()?;
        let channels = match channels {
            None => Channels::ALL,
            Some(names) => {
                let mut set = Channels::EMPTY;
                for n in names {
                    let ch = Channel::from_name(n).ok_or_else(|| {
                        format!("unknown channel {n:?} (quotes, trades, bars_1s or bars_1m)")
                    })?;
                    set = set.with(ch);
                }
                set
            }
        };
        Ok(Entitlements { patterns, written: symbols.to_vec(), channels })
    }

    /// Whether `name` matches one of the patterns.
    pub fn allows_symbol(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(name))
    }

    /// The channels.
    pub fn channels(&self) -> Channels {
        self.channels
    }

    /// The symbol patterns as written.
    pub fn symbol_patterns(&self) -> &[String] {
        &self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ent(symbols: &[&str]) -> Entitlements {
        let s: Vec<String> = symbols.iter().map(|s| s.to_string()).collect();
        Entitlements::new(&s, None).unwrap()
    }

    #[test]
    fn patterns_match_exact_names_and_prefixes() {
        let e = ent(&["AAPL", "MS*"]);
        // An exact name matches only itself.
        assert!(e.allows_symbol("AAPL"));
        assert!(!e.allows_symbol("AAPLX"));
        // A prefix pattern matches every name that starts with it.
        assert!(e.allows_symbol("MSFT"));
        assert!(e.allows_symbol("MS"));
        assert!(!e.allows_symbol("IBM"));
        // `*` matches everything; no pattern matches nothing.
        assert!(ent(&["*"]).allows_symbol("ANY"));
        assert!(!ent(&[]).allows_symbol("ANY"));
    }

    #[test]
    fn bad_patterns_and_channels_are_refused() {
        // A star inside a name, or alone with a name before it twice, is refused.
        assert!(Pattern::parse("M*T").is_err());
        assert!(Pattern::parse("**").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Entitlements::new(&[], Some(&["news".into()])).is_err());
        // Channels default to every one; a list narrows them.
        assert_eq!(ent(&["A"]).channels(), Channels::ALL);
        let q = Entitlements::new(&["A".into()], Some(&["quotes".into()])).unwrap();
        assert!(q.channels().contains(Channel::Quotes) && !q.channels().contains(Channel::Trades));
    }
}
