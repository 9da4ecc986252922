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

const HTML: &str = "text/html; charset=utf-8";
// Browsers refuse to run an ES module served with a non-JavaScript type.
const JS: &str = "text/javascript; charset=utf-8";

/// The embedded file served at `path`, if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (content_type, body): (&str, &[u8]) = match path {
        "/" | "/index.html" => (HTML, include_str!("index.html").as_bytes()),
        "/app.js" => (JS, include_str!("app.js").as_bytes()),
        "/tickwire.js" => (JS, include_str!("tickwire.js").as_bytes()),
        "/pricechart.js" => (JS, include_str!("pricechart.js").as_bytes()),
        "/style.css" => ("text/css; charset=utf-8", include_str!("style.css").as_bytes()),
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
        // The page's modules and stylesheet, with types browsers accept.
        for (path, ty) in [
            ("/app.js", JS),
            ("/tickwire.js", JS),
            ("/pricechart.js", JS),
            ("/style.css", "text/css; charset=utf-8"),
        ] {
            assert_eq!(asset(path).map(|a| a.content_type), Some(ty), "{path}");
        }
        // Unknown paths fall through to the router's 404.
        assert!(asset("/nope").is_none());
    }
}
