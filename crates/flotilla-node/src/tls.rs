//! TLS (`--tls-cert`, `--tls-key`, `--tls-ca`; docs/security.md "TLS").
//!
//! [`TlsSettings::load`] reads the three PEM files once at start and builds every rustls
//! config the node needs, so a bad file is reported (naming it) before anything listens:
//! - peers, listening: the node's certificate, and a client certificate that chains to the
//!   CA is required;
//! - peers, dialing: the node's certificate as the client certificate, and the server's
//!   certificate must chain to the CA and name the HOST of the peer's raft address;
//! - the HTTP API: the node's certificate; no client certificate is asked for.
//!
//! Only the `ring` provider is used (no aws-lc-rs in the build).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// How long a TLS handshake may take on the raft port (the HMAC handshake then has its own
/// timeout): a peer that connects and says nothing does not hold a task for long.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A file given to `--tls-*` that cannot be used; the message names the file.
#[derive(Debug, thiserror::Error)]
#[error("{}: {why}", path.display())]
pub struct TlsError {
    pub path: PathBuf,
    pub why: String,
}

/// The loaded, checked TLS material of a node. Cheap to clone.
#[derive(Clone)]
pub struct TlsSettings {
    cert_path: PathBuf,
    ca_path: PathBuf,
    peer_server: Arc<ServerConfig>,
    peer_client: Arc<ClientConfig>,
    api_server: Arc<ServerConfig>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").field("cert", &self.cert_path).finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The three `--tls-*` flags: all given (TLS on), or none (TLS off). An error is one
    /// line that names the flag and the file at fault.
    pub fn from_flags(
        cert: Option<&Path>,
        key: Option<&Path>,
        ca: Option<&Path>,
    ) -> Result<Option<TlsSettings>, String> {
        match (cert, key, ca) {
            (None, None, None) => Ok(None),
            (Some(cert), Some(key), Some(ca)) => {
                TlsSettings::load(cert, key, ca).map(Some).map_err(|e| {
                    let flag = if e.path == cert {
                        "--tls-cert"
                    } else if e.path == key {
                        "--tls-key"
                    } else {
                        "--tls-ca"
                    };
                    format!("{flag} {e}")
                })
            }
            _ => {
                Err("--tls-cert, --tls-key and --tls-ca go together: give all three or none".into())
            }
        }
    }

    /// Reads the certificate chain, the private key and the CA certificate(s) (PEM) and
    /// builds the configs. Errors name the file at fault.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<TlsSettings, TlsError> {
        let chain = read_certs(cert)?;
        let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| TlsError {
            path: key.to_path_buf(),
            why: format!("no usable PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        })?;
        let mut roots = RootCertStore::empty();
        for c in read_certs(ca)? {
            roots.add(c).map_err(|e| err(ca, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // Every builder checks that the key matches the certificate and is of a kind we
        // can sign with; blame the key file for that.
        let key_err = |e: rustls::Error| {
            err(key, format!("does not fit the certificate in {}: {e}", cert.display()))
        };
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| err(ca, format!("cannot verify clients with it: {e}")))?;
        let peer_server = server_builder(&provider, cert)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(key_err)?;
        let api_server = server_builder(&provider, cert)?
            .with_no_client_auth()
            .with_single_cert(chain.clone(), key_der.clone_key())
            .map_err(key_err)?;
        let peer_client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(cert, e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key_der)
            .map_err(key_err)?;
        Ok(TlsSettings {
            cert_path: cert.to_path_buf(),
            ca_path: ca.to_path_buf(),
            peer_server: Arc::new(peer_server),
            peer_client: Arc::new(peer_client),
            api_server: Arc::new(api_server),
        })
    }

    /// The `--tls-ca` file (read again by clients that take a PEM file, e.g. ureq's).
    pub fn ca_path(&self) -> &Path {
        &self.ca_path
    }

    /// The HTTP API's server config (no client certificates).
    pub fn api_server_config(&self) -> ServerConfig {
        (*self.api_server).clone()
    }

    /// A client config that trusts the CA (and presents the node's certificate): for the
    /// peers and for the HTTPS requests a node makes itself (`--join`).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.peer_client.clone()
    }

    /// Server side of a peer connection: the peer must present a certificate that chains
    /// to the CA.
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let accept = TlsAcceptor::from(self.peer_server.clone()).accept(tcp);
        within_timeout(accept).await
    }

    /// Client side of a peer connection to `addr` (`HOST:PORT`): the server's certificate
    /// must chain to the CA and name HOST (a DNS name or an IP address).
    pub async fn connect(
        &self,
        tcp: TcpStream,
        addr: &str,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(addr)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let connect = TlsConnector::from(self.peer_client.clone()).connect(name, tcp);
        within_timeout(connect).await
    }
}

async fn within_timeout<T>(fut: impl Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, fut).await.unwrap_or_else(|_| {
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"))
    })
}

fn server_builder(
    provider: &Arc<CryptoProvider>,
    cert: &Path,
) -> Result<rustls::ConfigBuilder<ServerConfig, rustls::WantsVerifier>, TlsError> {
    ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(cert, e.to_string()))
}

/// The name a peer's certificate must carry: the HOST of `HOST:PORT` (`[v6]:PORT` too).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| format!("{host:?} (from {addr:?}) is neither a DNS name nor an IP address"))
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| err(path, format!("cannot read it: {e}")))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(path, format!("bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(err(path, "no PEM CERTIFICATE in it".into()));
    }
    Ok(certs)
}

fn err(path: &Path, why: String) -> TlsError {
    TlsError { path: path.to_path_buf(), why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_is_the_host_of_the_raft_address() {
        assert_eq!(
            server_name("127.0.0.1:7101").unwrap(),
            ServerName::try_from("127.0.0.1").unwrap()
        );
        assert_eq!(server_name("[::1]:7101").unwrap(), ServerName::try_from("::1").unwrap());
        let dns = server_name("flotilla-0.flotilla-peers:7100").unwrap();
        assert_eq!(dns, ServerName::try_from("flotilla-0.flotilla-peers").unwrap());
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn the_tls_flags_come_all_three_or_not_at_all() {
        assert!(TlsSettings::from_flags(None, None, None).unwrap().is_none());
        let p = Path::new("x.pem");
        for (c, k, a) in [(Some(p), None, None), (None, Some(p), Some(p)), (Some(p), Some(p), None)]
        {
            let e = TlsSettings::from_flags(c, k, a).unwrap_err();
            assert!(e.contains("all three or none"), "{e}");
        }
    }

    #[test]
    fn a_matching_cert_and_key_load_and_a_foreign_key_is_blamed() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let node_key = rcgen::KeyPair::generate().unwrap();
        let node_params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let node_cert = node_params.signed_by(&node_key, &issuer).unwrap();
        let ca = write("ca.pem", ca_cert.pem());
        let cert = write("node.pem", node_cert.pem());
        let key = write("node.key", node_key.serialize_pem());
        let other_key = write("other.key", rcgen::KeyPair::generate().unwrap().serialize_pem());
        assert!(TlsSettings::from_flags(Some(&cert), Some(&key), Some(&ca)).unwrap().is_some());
        let e = TlsSettings::load(&cert, &other_key, &ca).unwrap_err();
        assert_eq!(e.path, other_key, "{e}");
        let e = TlsSettings::from_flags(Some(&cert), Some(&other_key), Some(&ca)).unwrap_err();
        assert!(e.starts_with("--tls-key ") && e.contains("other.key"), "{e}");
        // A key file that holds a certificate, and a CA file that holds a key.
        assert_eq!(TlsSettings::load(&cert, &cert, &ca).unwrap_err().path, cert);
        assert_eq!(TlsSettings::load(&cert, &key, &key).unwrap_err().path, key);
    }

    #[test]
    fn unreadable_or_invalid_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let e = TlsSettings::load(&missing, &junk, &junk).unwrap_err();
        assert_eq!(e.path, missing);
        assert!(e.to_string().contains("cannot read"), "{e}");
        let e = TlsSettings::load(&junk, &missing, &missing).unwrap_err();
        assert_eq!(e.path, junk);
        assert!(e.to_string().contains("no PEM CERTIFICATE"), "{e}");
    }
}
