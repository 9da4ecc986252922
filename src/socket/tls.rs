//! TLS on the one port (`--tls-cert` / `--tls-key`): the certificate and key
//! are loaded once at startup ([`load`]), and every connection's handshake is
//! done by the shard that owns it ([`accept`]) before any HTTP is read.
//!
//! rustls with its `ring` provider only, TLS 1.3 and 1.2 only (older
//! versions and SSL get a `protocol_version` alert). The handshake shares
//! the deadline of the HTTP request head (`handshake_timeout`), so a client
//! that opens a connection and stalls at any point before its request is
//! complete holds a socket for at most that long. A failed or timed-out
//! handshake is counted (`tickwire_tls_handshake_failures_total`) and logged
//! at debug: it is the client's problem, never the server's. A client that
//! speaks plain HTTP to the TLS port gets a plain-text 400 that says so.
//!
//! After the handshake the session runs on `TlsStream<TcpStream>`; the
//! socket code is generic over the stream, so plain TCP pays nothing for TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The first byte of every TLS connection: a handshake record (ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Why the certificate or the key cannot be used. Each names the file to
/// fix (or the flag to correct); the server does not start.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `--tls-cert` is missing, unreadable, or holds no PEM certificate.
    #[error("cannot use --tls-cert {}: {msg}", path.display())]
    Cert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// `--tls-key` is missing, unreadable, or holds no PEM private key.
    #[error("cannot use --tls-key {}: {msg}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// The key is not the certificate's (or rustls cannot use it).
    #[error("--tls-key {} does not fit --tls-cert {}: {msg}", key.display(), cert.display())]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        msg: String,
    },
}

/// What a PEM read error means to someone who has to fix the file.
fn pem_msg(e: pem::Error, what: &str) -> String {
    match e {
        pem::Error::Io(io) => io.to_string(),
        pem::Error::NoItemsFound => format!("no {what} found (expected PEM)"),
        other => other.to_string(),
    }
}

/// Loads a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
/// PKCS#1 or SEC1) and builds the acceptor every connection uses.
pub fn load(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let cert_err = |msg: String| TlsError::Cert { path: cert.to_path_buf(), msg };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_msg(e, "certificate")))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_msg(e, "certificate")))?;
    if chain.is_empty() {
        return Err(cert_err("no certificate found (expected PEM)".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Key { path: key.to_path_buf(), msg: pem_msg(e, "private key") })?;
    let mismatch = |e: rustls::Error| TlsError::Mismatch {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        msg: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(mismatch)?
        .with_no_client_auth()
        // Also checks that the key is the certificate's.
        .with_single_cert(chain, private)
        .map_err(mismatch)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connection on the TLS port that did not become a TLS session.
pub enum Refused {
    /// The peer spoke something other than TLS; the stream is handed back
    /// untouched so the caller can say so in plain text.
    NotTls(TcpStream),
    /// The handshake failed (bad ClientHello, old protocol version, no
    /// shared cipher suite, the peer left).
    Failed(std::io::Error),
}

/// Does the server side of a TLS handshake. Bound it with the handshake
/// deadline: it waits for the peer.
pub async fn accept(
    acceptor: &TlsAcceptor,
    stream: TcpStream,
) -> Result<TlsStream<TcpStream>, Refused> {
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(0) => {
            return Err(Refused::Failed(std::io::ErrorKind::UnexpectedEof.into()));
        }
        Ok(_) if first[0] != TLS_HANDSHAKE_RECORD => return Err(Refused::NotTls(stream)),
        Ok(_) => {}
        Err(e) => return Err(Refused::Failed(e)),
    }
    acceptor.accept(stream).await.map_err(Refused::Failed)
}

/// A TLS handshake that did not complete: counted and logged at debug.
pub struct HandshakeFailed<'a> {
    /// Why.
    pub reason: &'a dyn std::fmt::Display,
}

impl HandshakeFailed<'_> {
    /// Counts it in `failures` (the shard's counter) and logs it.
    pub fn emit(self, failures: &std::sync::atomic::AtomicU64) {
        failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(reason = %self.reason, "TLS handshake failed");
    }
}
