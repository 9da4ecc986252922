//! The browser dashboard: static files embedded in the binary at build time
//! (`include_str!`), served on `GET /` and below. No build step, no CDN.
//!
//! [`asset`] maps a request path to its embedded file; the HTTP router in
//! [`crate::socket`] calls it for every GET it does not route itself.

/// One embedded file.
pub struct Asset {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The file's bytes.
    pub body: &'static [u8],
}

/// The embedded file served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", include_str!("index.html").as_bytes()),
        _ => return None,
    };
    Some(Asset { content_type, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_is_served_at_root() {
        // The page is embedded and served at `/`.
        assert!(asset("/").is_some_and(|a| a.content_type.starts_with("text/html")));
        // Unknown paths fall through to the router's 404.
        assert!(asset("/nope").is_none());
    }
}
