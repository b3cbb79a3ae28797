//! TLS to MySQL-protocol servers (sources, destinations, the MySQL store):
//! the modes of MySQL's own `--ssl-mode`, turned into the driver's options,
//! and handshake failures told apart in words an operator acts on.
//!
//! The modes, weakest first:
//! - `disabled`: plain text.
//! - `preferred` (the default): TLS when the server offers it, plain text
//!   when it does not; the certificate is not checked (as MySQL's clients).
//! - `required`: TLS or no connection; the certificate is not checked.
//! - `verify_ca`: TLS with a certificate signed by `ca` (or, without `ca`,
//!   by a public root); any name.
//! - `verify_identity`: as `verify_ca`, and the certificate must name
//!   `server_name`, or else the host dialled (after host mapping, so the
//!   public name a mapping gives is what is checked).
//!
//! Why `verify_ca` learns the name first: the driver (mysql_async 0.37) can
//! check a chain without the name only by matching the text of rustls'
//! error, which rustls 0.23.2x no longer writes, so its "skip domain
//! validation" does not work. Instead [`probe_name`] makes one TLS handshake
//! of its own (the MySQL `SSLRequest`, then rustls), verifies the chain
//! against the CA and reads the names the certificate is valid for; the real
//! connection then verifies chain *and* that name. A certificate must be
//! signed by the CA to pass either step, which is what `verify_ca` promises.
//! The name found is kept per server and CA and found again when it fails.

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How a connection is secured, weakest first (the order is used to refuse
/// modes below a configured minimum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    Disabled,
    #[default]
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Disabled => "disabled",
            TlsMode::Preferred => "preferred",
            TlsMode::Required => "required",
            TlsMode::VerifyCa => "verify_ca",
            TlsMode::VerifyIdentity => "verify_identity",
        }
    }

    pub fn parse(text: &str) -> Option<TlsMode> {
        [
            TlsMode::Disabled,
            TlsMode::Preferred,
            TlsMode::Required,
            TlsMode::VerifyCa,
            TlsMode::VerifyIdentity,
        ]
        .into_iter()
        .find(|m| m.as_str() == text)
    }

    fn verifies(self) -> bool {
        self >= TlsMode::VerifyCa
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One side's TLS settings, as `create_ccr`'s `tls` object gives them. Paths
/// are read at each connection; the key file's contents never leave the
/// driver, and the struct shows only paths.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsOptions {
    #[serde(default)]
    pub mode: TlsMode,
    /// PEM file of the CA (or CAs) that signed the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM), for servers that ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// The name `verify_identity` checks instead of the host dialled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

impl TlsOptions {
    pub fn with_mode(mode: TlsMode) -> Self {
        TlsOptions {
            mode,
            ..TlsOptions::default()
        }
    }

    /// Rules that need no server; the message names the field under `field`.
    pub fn validate(&self, field: &str) -> Result<(), String> {
        if self.cert.is_some() != self.key.is_some() {
            return Err(format!(
                "{field}.cert and {field}.key go together: give both or neither"
            ));
        }
        for (name, path) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(path) = path {
                if self.mode == TlsMode::Disabled {
                    return Err(format!(
                        "{field}.{name} is set but {field}.mode is disabled"
                    ));
                }
                std::fs::File::open(path).map_err(|e| {
                    format!("{field}.{name} {} cannot be read: {e}", path.display())
                })?;
            }
        }
        if let Some(ca) = &self.ca {
            let pem = std::fs::read(ca).map_err(|e| format!("{field}.ca: {e}"))?;
            let certs = CertificateDer::pem_slice_iter(&pem)
                .filter(|c| c.is_ok())
                .count();
            if certs == 0 {
                return Err(format!(
                    "{field}.ca {} holds no PEM certificate",
                    ca.display()
                ));
            }
        }
        if let Some(name) = &self.server_name {
            if ServerName::try_from(name.as_str()).is_err() {
                return Err(format!(
                    "{field}.server_name {name:?} is not a host name or IP address"
                ));
            }
            if self.mode != TlsMode::VerifyIdentity {
                return Err(format!(
                    "{field}.server_name is checked only by mode verify_identity, not {}",
                    self.mode
                ));
            }
        }
        match self.mode {
            TlsMode::Preferred | TlsMode::Required if self.ca.is_some() => Err(format!(
                "{field}.ca is used only by modes verify_ca and verify_identity; {} does \
                 not check the certificate: set {field}.mode to verify_ca",
                self.mode
            )),
            // Any certificate from any public CA, for any name, would pass.
            TlsMode::VerifyCa if self.ca.is_none() => Err(format!(
                "{field}.mode verify_ca needs {field}.ca: the CA file that signed the \
                 server's certificate (verify_identity checks public certificates by name)"
            )),
            _ => Ok(()),
        }
    }
}

/// Why a server without TLS is refused under `mode`.
pub fn no_tls(mode: TlsMode) -> String {
    format!(
        "server does not offer TLS, which tls mode {mode} needs: give the server \
         ssl_cert and ssl_key, or use tls mode preferred or disabled"
    )
}

/// What a failed TLS handshake means, in an operator's words; `None` when
/// the error is not about TLS.
pub fn describe(e: &mysql_async::Error, mode: TlsMode, name: &str) -> Option<String> {
    if let mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer) = e {
        return Some(no_tls(mode));
    }
    if let Some(r) = rustls_error(e) {
        return Some(describe_rustls(r, name));
    }
    match e {
        mysql_async::Error::Io(mysql_async::IoError::Tls(t)) => {
            Some(format!("TLS handshake failed: {t}"))
        }
        _ => None,
    }
}

fn describe_rustls(e: &rustls::Error, name: &str) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                "TLS handshake failed: certificate not signed by the given CA".into()
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                let presented = match c {
                    CertificateError::NotValidForNameContext { presented, .. } => {
                        let names: Vec<&str> = presented.iter().map(|p| shown_name(p)).collect();
                        format!(" (it names {})", names.join(", "))
                    }
                    _ => String::new(),
                };
                format!(
                    "TLS handshake failed: name mismatch: the server's certificate is not \
                     valid for {name:?}{presented}; set tls.server_name to a name it holds"
                )
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "TLS handshake failed: the server's certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "TLS handshake failed: the server's certificate is not valid yet".into()
            }
            other => format!("TLS handshake failed: invalid server certificate: {other}"),
        },
        other => format!("TLS handshake failed: {other}"),
    }
}

/// The rustls error inside a driver error, wherever the driver wrapped it.
fn rustls_error(e: &mysql_async::Error) -> Option<&rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = inner.downcast_ref::<rustls::Error>() {
                    return Some(r);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// The driver's TLS options for a connection to `host` in `opts.mode`, with
/// `name` the name to verify (from [`probe_name`] under `verify_ca`).
pub fn ssl_opts(opts: &TlsOptions, name: Option<&str>) -> Option<mysql_async::SslOpts> {
    if opts.mode == TlsMode::Disabled {
        return None;
    }
    let mut ssl = mysql_async::SslOpts::default();
    if let (Some(cert), Some(key)) = (&opts.cert, &opts.key) {
        ssl = ssl.with_client_identity(Some(mysql_async::ClientIdentity::new(
            cert.clone().into(),
            key.clone().into(),
        )));
    }
    if !opts.mode.verifies() {
        return Some(ssl.with_danger_accept_invalid_certs(true));
    }
    if let Some(ca) = &opts.ca {
        ssl = ssl
            .with_root_certs(vec![ca.clone().into()])
            .with_disable_built_in_roots(true);
    }
    let name = match opts.mode {
        TlsMode::VerifyIdentity => opts.server_name.as_deref(),
        _ => name,
    };
    Some(ssl.with_danger_tls_hostname_override(name.map(str::to_string)))
}

type NameKey = (String, u16, Option<PathBuf>);

/// Names found by [`probe_name`], per server and CA.
fn names() -> &'static Mutex<HashMap<NameKey, String>> {
    static NAMES: OnceLock<Mutex<HashMap<NameKey, String>>> = OnceLock::new();
    NAMES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The name last found for `host:port` under these options, if any.
pub fn known_name(opts: &TlsOptions, host: &str, port: u16) -> Option<String> {
    names()
        .lock()
        .get(&(host.to_string(), port, opts.ca.clone()))
        .cloned()
}

/// Why the name could not be learnt.
#[derive(Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// The network or the server's availability: worth retrying.
    Unreachable(String),
    /// The server's TLS or certificate: needs an operator.
    Refused(String),
}

/// The name `verify_ca` verifies for `host:port`: the one kept from an
/// earlier probe, unless `fresh`.
pub async fn verify_ca_name(
    opts: &TlsOptions,
    host: &str,
    port: u16,
    timeout: Duration,
    fresh: bool,
) -> Result<String, ProbeError> {
    let key = (host.to_string(), port, opts.ca.clone());
    if !fresh {
        if let Some(name) = names().lock().get(&key) {
            return Ok(name.clone());
        }
    }
    let name = tokio::time::timeout(timeout, probe_name(opts, host, port))
        .await
        .map_err(|_| {
            ProbeError::Unreachable(format!("no answer within {} s", timeout.as_secs_f64()))
        })??;
    names().lock().insert(key, name.clone());
    Ok(name)
}

/// One TLS handshake with the server, verifying its chain against the CA
/// and answering a name the certificate is valid for.
async fn probe_name(opts: &TlsOptions, host: &str, port: u16) -> Result<String, ProbeError> {
    let mut tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .map_err(|e| ProbeError::Unreachable(e.to_string()))?;
    // The server's greeting: a 4-byte header, then protocol 10's handshake.
    let greeting = read_packet(&mut tcp)
        .await
        .map_err(ProbeError::Unreachable)?;
    let config = probe_config(opts).await.map_err(ProbeError::Refused)?;
    let seen = config.1;
    let refused = ProbeError::Refused;
    if greeting.first() == Some(&0xff) {
        return Err(refused(format!(
            "the server refused the connection: {}",
            String::from_utf8_lossy(greeting.get(3..).unwrap_or_default())
        )));
    }
    let caps = greeting_capabilities(&greeting).map_err(refused)?;
    const CLIENT_SSL: u32 = 0x800;
    if caps & CLIENT_SSL == 0 {
        return Err(refused(no_tls(opts.mode)));
    }
    // SSLRequest: capabilities (PROTOCOL_41 | SSL | SECURE_CONNECTION), max
    // packet, utf8mb4, 23 zero bytes; sequence id 1.
    let mut request = vec![32u8, 0, 0, 1];
    request.extend_from_slice(&(0x0200u32 | CLIENT_SSL | 0x8000).to_le_bytes());
    request.extend_from_slice(&(16u32 << 20).to_le_bytes());
    request.push(45);
    request.extend_from_slice(&[0; 23]);
    tcp.write_all(&request)
        .await
        .map_err(|e| ProbeError::Unreachable(e.to_string()))?;
    let sni = ServerName::try_from(host.to_string())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config.0));
    let result = connector.connect(sni, tcp).await;
    let found = seen.lock().take();
    match (result, found) {
        (_, Some(Ok(name))) => Ok(name),
        (_, Some(Err(e))) => Err(refused(describe_rustls(&e, host))),
        // No certificate was seen: the connection broke first.
        (Err(e), None) => Err(ProbeError::Unreachable(format!("TLS handshake: {e}"))),
        (Ok(_), None) => Err(refused(
            "TLS handshake failed: the server sent no certificate".into(),
        )),
    }
}

type Seen = Arc<Mutex<Option<Result<String, rustls::Error>>>>;

/// The certificates of a PEM file as trust anchors; `label` names the file
/// in the message (`tls.ca /etc/ca.pem`).
pub fn pem_roots(pem: &[u8], label: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("{label}: {e}"))?;
        roots.add(cert).map_err(|e| format!("{label}: {e}"))?;
    }
    Ok(roots)
}

/// The probe's client: the CA's roots, a verifier that keeps what it saw.
async fn probe_config(opts: &TlsOptions) -> Result<(rustls::ClientConfig, Seen), String> {
    let mut roots = RootCertStore::empty();
    match &opts.ca {
        Some(ca) => {
            let pem = tokio::fs::read(ca)
                .await
                .map_err(|e| format!("cannot read tls.ca {}: {e}", ca.display()))?;
            roots = pem_roots(&pem, &format!("tls.ca {}", ca.display()))?;
        }
        None => roots.extend(webpki_roots()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let seen = Arc::new(Mutex::new(None));
    let verifier = Arc::new(NameFinder {
        inner,
        seen: seen.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok((config, seen))
}

/// The public roots the driver trusts when no CA is given.
fn webpki_roots() -> impl Iterator<Item = rustls::pki_types::TrustAnchor<'static>> {
    webpki_roots::TLS_SERVER_ROOTS.iter().cloned()
}

async fn read_packet(tcp: &mut tokio::net::TcpStream) -> Result<Vec<u8>, String> {
    let mut header = [0u8; 4];
    tcp.read_exact(&mut header)
        .await
        .map_err(|e| format!("reading the server's greeting: {e}"))?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut body = vec![0u8; len];
    tcp.read_exact(&mut body)
        .await
        .map_err(|e| format!("reading the server's greeting: {e}"))?;
    Ok(body)
}

/// The capability flags of a protocol-10 greeting.
fn greeting_capabilities(p: &[u8]) -> Result<u32, String> {
    let bad = || "the server's greeting is not MySQL protocol 10".to_string();
    if p.first() != Some(&10) {
        return Err(bad());
    }
    let version_end = p.iter().skip(1).position(|b| *b == 0).ok_or_else(bad)? + 1;
    // version\0, thread id (4), auth data part 1 (8), filler (1), caps low (2),
    // charset (1), status (2), caps high (2).
    let low = version_end + 1 + 4 + 8 + 1;
    let low_bytes = p.get(low..low + 2).ok_or_else(bad)?;
    let high = p.get(low + 5..low + 7).unwrap_or(&[0, 0]);
    Ok(u32::from_le_bytes([
        low_bytes[0],
        low_bytes[1],
        high[0],
        high[1],
    ]))
}

/// Verifies the chain as rustls does; a chain that is good but for the name
/// is accepted, and the names it holds are kept.
#[derive(Debug)]
struct NameFinder {
    inner: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for NameFinder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let result = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        let (found, verdict) = match result {
            Ok(v) => (Ok(server_name.to_str().into_owned()), Ok(v)),
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
                presented,
                ..
            })) => match presented.iter().find_map(|p| presented_name(p)) {
                Some(name) => (Ok(name), Ok(ServerCertVerified::assertion())),
                None => {
                    let e = rustls::Error::General(
                        "the server's certificate holds no name in subjectAltName; \
                         verify_ca needs one (a certificate's CN is not checked)"
                            .into(),
                    );
                    (Err(e.clone()), Err(e))
                }
            },
            Err(e) => (Err(e.clone()), Err(e)),
        };
        *self.seen.lock() = Some(found);
        verdict
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// A presented name as an operator writes it: `db.example`, `10.0.0.1`.
fn shown_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .map(|(_, rest)| rest.trim_end_matches(')'))
        .unwrap_or(presented)
        .trim_matches('"')
}

/// A name as rustls presents it (`DnsName("db.example")`, `IpAddress(…)`),
/// as text a `ServerName` parses; wildcard names are made concrete.
fn presented_name(presented: &str) -> Option<String> {
    let inner = shown_name(presented);
    let name = match inner.strip_prefix("*.") {
        Some(rest) => format!("ccr-syncer-verify-ca.{rest}"),
        None => inner.to_string(),
    };
    ServerName::try_from(name.clone()).ok().map(|_| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_order() {
        for m in [
            "disabled",
            "preferred",
            "required",
            "verify_ca",
            "verify_identity",
        ] {
            assert_eq!(TlsMode::parse(m).unwrap().as_str(), m);
        }
        assert!(TlsMode::parse("REQUIRED").is_none());
        assert!(TlsMode::Preferred < TlsMode::Required);
        assert!(TlsMode::VerifyCa < TlsMode::VerifyIdentity);
        let o: TlsOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(o.mode, TlsMode::Preferred);
        let e = serde_json::from_str::<TlsOptions>(r#"{"mode":"strict"}"#).unwrap_err();
        assert!(e.to_string().contains("verify_identity"), "{e}");
    }

    #[test]
    fn cert_and_key_go_together() {
        let o = TlsOptions {
            mode: TlsMode::Required,
            cert: Some("/nonexistent".into()),
            ..TlsOptions::default()
        };
        assert!(o.validate("src.tls").unwrap_err().contains("go together"));
        let o = TlsOptions {
            mode: TlsMode::VerifyCa,
            ca: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        assert!(o.validate("src.tls").unwrap_err().contains("src.tls.ca"));
        let o = TlsOptions::with_mode(TlsMode::VerifyCa);
        assert!(o
            .validate("t")
            .unwrap_err()
            .contains("verify_ca needs t.ca"));
        let o = TlsOptions {
            mode: TlsMode::Required,
            server_name: Some("db.example".into()),
            ..TlsOptions::default()
        };
        assert!(o
            .validate("t")
            .unwrap_err()
            .contains("only by mode verify_identity"));
    }

    #[test]
    fn presented_names() {
        assert_eq!(
            presented_name("DnsName(\"db.example\")").unwrap(),
            "db.example"
        );
        assert_eq!(presented_name("IpAddress(127.0.0.1)").unwrap(), "127.0.0.1");
        assert_eq!(
            presented_name("DnsName(\"*.example\")").unwrap(),
            "ccr-syncer-verify-ca.example"
        );
        assert_eq!(presented_name("db.example").unwrap(), "db.example");
    }

    #[test]
    fn greeting_flags() {
        let mut p = vec![10u8];
        p.extend_from_slice(b"10.11.0-MariaDB\0");
        p.extend_from_slice(&[1, 0, 0, 0]);
        p.extend_from_slice(&[0; 8]);
        p.push(0);
        p.extend_from_slice(&0x0800u16.to_le_bytes());
        p.push(45);
        p.extend_from_slice(&[2, 0]);
        p.extend_from_slice(&0x0001u16.to_le_bytes());
        assert_eq!(greeting_capabilities(&p).unwrap(), 0x0001_0800);
        assert!(greeting_capabilities(&[9]).is_err());
    }
}
