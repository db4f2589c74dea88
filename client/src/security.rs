//! The client's security settings (Kafka's `security.protocol`, SASL mechanism and
//! credentials, TLS files), read from a Kafka client properties file (`--command-config`:
//! librdkafka's and the Java client's names), and the rustls `ClientConfig` built from them
//! once per `Client` (every connection shares it, with its session-resumption cache).
//!
//! Runs on: the thread that builds the client config (file reads, certificate parsing);
//! the result is `Send` and handed to every executor that opens connections.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use crate::scram::Mechanism;

/// The largest properties file read (bytes): a client config is a few lines.
pub const PROPERTIES_FILE_MAX_BYTES: u64 = 1 << 20;

/// Where system CA bundles live, tried in order when no CA file is given and
/// `SSL_CERT_FILE` is unset (Debian/Ubuntu, Fedora/RHEL, openSUSE, Alpine/BSD).
const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    /// Plain TCP (the default).
    #[default]
    Plaintext,
    /// TLS.
    Ssl,
    /// SASL over plain TCP.
    SaslPlaintext,
    /// SASL over TLS.
    SaslSsl,
}

impl SecurityProtocol {
    /// Parses Kafka's names, case-insensitively.
    pub fn parse(s: &str) -> Option<SecurityProtocol> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    /// True for SSL and SASL_SSL.
    pub fn is_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// True for SASL_PLAINTEXT and SASL_SSL.
    pub fn is_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// Kafka's name.
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }
}

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    /// PLAIN (RFC 4616): the password in the clear, so only over TLS in practice.
    Plain,
    /// SCRAM-SHA-256 or SCRAM-SHA-512.
    Scram(Mechanism),
}

impl SaslMechanism {
    /// Parses PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (case-insensitive).
    pub fn parse(s: &str) -> Option<SaslMechanism> {
        let up = s.trim().to_ascii_uppercase();
        if up == "PLAIN" {
            return Some(SaslMechanism::Plain);
        }
        Mechanism::from_name(&up).map(SaslMechanism::Scram)
    }

    /// The name SaslHandshake sends.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::Scram(m) => m.name(),
        }
    }
}

/// SASL settings: mechanism and credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslSettings {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The password (never printed: `Debug` hides it).
    pub password: String,
}

impl fmt::Debug for SaslSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslSettings")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// Where the TLS material is (PEM files) and whether the broker's host name is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CAs the broker's certificate must chain to (`ssl.ca.location`); none: the
    /// system's bundle.
    pub ca: Option<PathBuf>,
    /// Client certificate chain for mTLS (`ssl.certificate.location`).
    pub cert: Option<PathBuf>,
    /// Its private key (`ssl.key.location`), unencrypted PEM.
    pub key: Option<PathBuf>,
    /// True with `ssl.endpoint.identification.algorithm=` (empty, or `none`): the chain
    /// is still verified, the host name is not.
    pub skip_hostname_check: bool,
}

/// Everything the client needs to open a secured connection. The default is PLAINTEXT,
/// which adds nothing to a connection.
#[derive(Clone, Default)]
pub struct Security {
    /// Kafka's security.protocol.
    pub protocol: SecurityProtocol,
    /// SASL settings (SASL_* protocols only).
    pub sasl: Option<SaslSettings>,
    /// The rustls config (SSL and SASL_SSL only), built once by `Security::build`.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("protocol", &self.protocol)
            .field("sasl", &self.sasl)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Security {
    /// Checks the settings belong together and builds the TLS config (reading the files).
    pub fn build(
        protocol: SecurityProtocol,
        sasl: Option<SaslSettings>,
        tls: &TlsFiles,
    ) -> Result<Security, String> {
        if protocol.is_sasl() && sasl.is_none() {
            return Err(format!(
                "security.protocol={} needs sasl.mechanism, sasl.username and sasl.password (or sasl.jaas.config)",
                protocol.name()
            ));
        }
        let tls = if protocol.is_tls() {
            Some(tls_config(tls)?)
        } else {
            None
        };
        Ok(Security {
            protocol,
            sasl: if protocol.is_sasl() { sasl } else { None },
            tls,
        })
    }

    /// Reads a Kafka client properties file (`--command-config`).
    pub fn from_properties_file(path: &Path) -> Result<Security, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if meta.len() > PROPERTIES_FILE_MAX_BYTES {
            return Err(format!(
                "{}: larger than {PROPERTIES_FILE_MAX_BYTES} bytes; not a client properties file",
                path.display()
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let props = parse_properties(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        for k in unused_properties(&props) {
            log::warn!(
                "{}: property {k} is not used by this client",
                path.display()
            );
        }
        Security::from_properties(&props).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Builds the settings from Kafka client properties. Names the Java client and
    /// librdkafka use are both taken; properties that do not concern security are left to
    /// the caller (and listed by `unused_properties`).
    pub fn from_properties(props: &BTreeMap<String, String>) -> Result<Security, String> {
        let get = |k: &str| props.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let protocol = match get("security.protocol") {
            Some(p) => SecurityProtocol::parse(p).ok_or_else(|| {
                format!(
                    "security.protocol={p}: expected PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL"
                )
            })?,
            None => SecurityProtocol::Plaintext,
        };
        let mechanism = match get("sasl.mechanism").or_else(|| get("sasl.mechanisms")) {
            Some(m) => SaslMechanism::parse(m).ok_or_else(|| {
                format!("sasl.mechanism={m}: expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
            })?,
            // Kafka's default is GSSAPI (Kerberos), which this client does not speak:
            // refused rather than guessing another mechanism.
            None if protocol.is_sasl() => {
                return Err(format!(
                    "security.protocol={} needs sasl.mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; Kafka's default GSSAPI is not supported)",
                    protocol.name()
                ));
            }
            None => SaslMechanism::Plain,
        };
        let (mut username, mut password) = (
            get("sasl.username").map(str::to_owned),
            get("sasl.password").map(str::to_owned),
        );
        // SASL properties in a file for a non-SASL protocol are ignored, as Kafka does.
        if let Some(jaas) = get("sasl.jaas.config").filter(|_| protocol.is_sasl()) {
            let j = parse_jaas(jaas)?;
            let module_ok = match mechanism {
                SaslMechanism::Plain => j.module.ends_with(".PlainLoginModule"),
                SaslMechanism::Scram(_) => j.module.ends_with(".ScramLoginModule"),
            };
            if !module_ok {
                return Err(format!(
                    "sasl.jaas.config names {} but sasl.mechanism is {}",
                    j.module,
                    mechanism.name()
                ));
            }
            username = username.or(j.options.get("username").cloned());
            password = password.or(j.options.get("password").cloned());
        }
        let sasl = match (protocol.is_sasl(), username, password) {
            (false, _, _) => None,
            (true, Some(username), Some(password)) => Some(SaslSettings {
                mechanism,
                username,
                password,
            }),
            (true, _, _) => {
                return Err(format!(
                    "security.protocol={} needs sasl.username and sasl.password (or sasl.jaas.config with username= and password=)",
                    protocol.name()
                ));
            }
        };
        if let Some(t) = get("ssl.truststore.type")
            && !t.eq_ignore_ascii_case("PEM")
        {
            return Err(format!(
                "ssl.truststore.type={t}: only PEM files are read; convert it (keytool -exportcert -rfc) and use ssl.ca.location"
            ));
        }
        if let Some(t) = get("ssl.keystore.type")
            && !t.eq_ignore_ascii_case("PEM")
        {
            return Err(format!(
                "ssl.keystore.type={t}: only PEM files are read; use ssl.certificate.location and ssl.key.location"
            ));
        }
        if get("ssl.key.password").is_some() {
            return Err(
                "ssl.key.password: encrypted private keys are not supported; give an unencrypted PEM key (openssl pkey -in k.pem -out plain.pem)"
                    .into(),
            );
        }
        if get("enable.ssl.certificate.verification")
            .is_some_and(|v| v.eq_ignore_ascii_case("false"))
        {
            return Err(
                "enable.ssl.certificate.verification=false is not supported: give the broker's CA with ssl.ca.location"
                    .into(),
            );
        }
        // Present but empty (or `none`) means "no host name check" in Kafka; `get` drops
        // empty values, so look at the raw entry.
        let skip_hostname_check = props
            .get("ssl.endpoint.identification.algorithm")
            .is_some_and(|v| v.trim().is_empty() || v.trim().eq_ignore_ascii_case("none"));
        let tls = TlsFiles {
            ca: get("ssl.ca.location")
                .or_else(|| get("ssl.truststore.location"))
                .map(PathBuf::from),
            cert: get("ssl.certificate.location").map(PathBuf::from),
            key: get("ssl.key.location").map(PathBuf::from),
            skip_hostname_check,
        };
        Security::build(protocol, sasl, &tls)
    }
}

/// The security-related property names `Security::from_properties` reads.
pub const SECURITY_PROPERTIES: [&str; 15] = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.mechanisms",
    "sasl.username",
    "sasl.password",
    "sasl.jaas.config",
    "ssl.ca.location",
    "ssl.truststore.location",
    "ssl.truststore.type",
    "ssl.certificate.location",
    "ssl.key.location",
    "ssl.keystore.type",
    "ssl.key.password",
    "ssl.endpoint.identification.algorithm",
    "enable.ssl.certificate.verification",
];

/// Properties of `props` this client does not use (to warn about).
pub fn unused_properties(props: &BTreeMap<String, String>) -> Vec<String> {
    props
        .keys()
        .filter(|k| !SECURITY_PROPERTIES.contains(&k.as_str()))
        .cloned()
        .collect()
}

/// Parses Java properties text: `key=value`, `key: value` or `key value` lines, `#`/`!`
/// comments, a trailing `\` continues the line (JAAS configs are often split).
pub fn parse_properties(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    let mut lines = text.lines().enumerate().peekable();
    while let Some((n, raw)) = lines.next() {
        let line = raw.trim_start();
        if logical.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = line.len() - line.trim_end_matches('\\').len();
        if trailing % 2 == 1 && lines.peek().is_some() {
            logical.push_str(&line[..line.len() - 1]);
            continue;
        }
        logical.push_str(line);
        let entry = std::mem::take(&mut logical);
        let entry = entry.trim_end();
        let sep = entry
            .find(['=', ':', ' ', '\t'])
            .ok_or_else(|| format!("line {}: expected key=value, got {entry:?}", n + 1))?;
        let key = entry[..sep].trim().to_owned();
        let mut value = entry[sep..].trim_start();
        if let Some(v) = value.strip_prefix(['=', ':']) {
            value = v.trim_start();
        }
        if key.is_empty() {
            return Err(format!("line {}: empty property name", n + 1));
        }
        out.insert(key, value.to_owned());
    }
    Ok(out)
}

/// One JAAS login module entry: `class flag key="value" ...;`.
#[derive(Debug, PartialEq, Eq)]
struct Jaas {
    module: String,
    options: BTreeMap<String, String>,
}

/// The `username` and `password` options of a `sasl.jaas.config` value (the broker's
/// `--inter-broker-credentials` file takes this form too).
pub fn jaas_credentials(s: &str) -> Result<(Option<String>, Option<String>), String> {
    let j = parse_jaas(s)?;
    Ok((
        j.options.get("username").cloned(),
        j.options.get("password").cloned(),
    ))
}

/// Parses `sasl.jaas.config` (one module; values quoted with `"`, `\` escapes inside).
fn parse_jaas(s: &str) -> Result<Jaas, String> {
    let bad = |why: &str| format!("sasl.jaas.config: {why}");
    let s = s.trim();
    let s = s
        .strip_suffix(';')
        .ok_or_else(|| bad("must end with `;`"))?;
    let mut rest = s.trim_start();
    let word = |rest: &mut &str| -> Option<String> {
        let r = rest.trim_start();
        let end = r.find(char::is_whitespace).unwrap_or(r.len());
        let w = &r[..end];
        *rest = &r[end..];
        (!w.is_empty()).then(|| w.to_owned())
    };
    let module = word(&mut rest).ok_or_else(|| bad("no login module"))?;
    let flag = word(&mut rest).ok_or_else(|| bad("no control flag (required)"))?;
    if !["required", "requisite", "sufficient", "optional"].contains(&flag.as_str()) {
        return Err(bad(&format!("unknown control flag {flag}")));
    }
    let mut options = BTreeMap::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| bad(&format!("expected key=value at {rest:?}")))?;
        let key = rest[..eq].trim().to_owned();
        rest = &rest[eq + 1..];
        let value;
        if let Some(q) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = q.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, e)) => v.push(e),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    c => v.push(c),
                }
            }
            let end = end.ok_or_else(|| bad(&format!("unterminated quote in {key}")))?;
            value = v;
            rest = &q[end + 1..];
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            value = rest[..end].to_owned();
            rest = &rest[end..];
        }
        if key.is_empty() {
            return Err(bad("empty option name"));
        }
        options.insert(key, value);
    }
    Ok(Jaas { module, options })
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {what} from {}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad {what} in {} (PEM expected): {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "no PEM certificate in {} ({what}; JKS/PKCS12 stores must be converted to PEM)",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA file to trust: the given one, else `SSL_CERT_FILE`, else the system bundle.
fn ca_file(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = given {
        return Ok(p.to_owned());
    }
    if let Some(p) = std::env::var_os("SSL_CERT_FILE") {
        return Ok(PathBuf::from(p));
    }
    SYSTEM_CA_BUNDLES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no CA given (ssl.ca.location) and no system CA bundle found ({})",
                SYSTEM_CA_BUNDLES.join(", ")
            )
        })
}

/// Builds the rustls client config: the CAs, the optional client certificate, and the host
/// name check unless turned off.
pub fn tls_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let ca = ca_file(files.ca.as_deref())?;
    let mut roots = rustls::RootCertStore::empty();
    for c in read_certs(&ca, "CA certificates")? {
        roots
            .add(c)
            .map_err(|e| format!("CA certificate in {}: {e}", ca.display()))?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = if files.skip_hostname_check {
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| format!("server certificate verifier: {e}"))?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoHostnameCheck(inner)))
    } else {
        builder.with_root_certificates(roots)
    };
    let config = match (&files.cert, &files.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = read_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                format!(
                    "cannot read an unencrypted PEM private key from {}: {e}",
                    key.display()
                )
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate {} and key: {e}", cert.display()))?
        }
        _ => {
            return Err(
                "a client certificate needs both ssl.certificate.location and ssl.key.location"
                    .into(),
            );
        }
    };
    Ok(Arc::new(config))
}

/// The name the broker's certificate is checked against: the host of "host:port" (an IP
/// address is checked against the certificate's IP SANs).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = match addr.rsplit_once(':') {
        Some((h, _)) => h,
        None => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_owned())
        .map_err(|e| format!("{host:?} is not a host name for TLS: {e}"))
}

/// Kafka's `ssl.endpoint.identification.algorithm=` (empty): the chain and signatures are
/// verified as usual; only a name mismatch is accepted.
#[derive(Debug)]
struct NoHostnameCheck(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoHostnameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> BTreeMap<String, String> {
        parse_properties(text).unwrap()
    }

    // Java properties syntax: separators `=`, `:` and space, comments, continued lines
    // (a JAAS config split over lines), later keys win; a line without a separator fails.
    #[test]
    fn properties_syntax() {
        let p = props(
            "# comment\n! another\nsecurity.protocol = SASL_SSL\nsasl.mechanism: SCRAM-SHA-512\n\
             client.id osprey\nsasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  username=\"alice\" \\\n  password=\"p w\";\n",
        );
        assert_eq!(p["security.protocol"], "SASL_SSL");
        assert_eq!(p["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(p["client.id"], "osprey");
        assert_eq!(
            p["sasl.jaas.config"],
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"alice\" password=\"p w\";"
        );
        assert!(parse_properties("novalue\n").is_err());
        assert_eq!(unused_properties(&p), vec!["client.id".to_string()]);
    }

    // The JAAS forms Kafka's docs show: PLAIN and SCRAM modules, quoted values with
    // escapes; a missing `;`, flag or closing quote is an error, not a panic.
    #[test]
    fn jaas_config() {
        let j = parse_jaas(
            r#"org.apache.kafka.common.security.plain.PlainLoginModule required username="u" password="a\"b";"#,
        )
        .unwrap();
        assert_eq!(
            j.module,
            "org.apache.kafka.common.security.plain.PlainLoginModule"
        );
        assert_eq!(j.options["username"], "u");
        assert_eq!(j.options["password"], "a\"b");
        for bad in [
            r#"org.x.PlainLoginModule required username="u""#,
            "org.x.PlainLoginModule;",
            r#"org.x.PlainLoginModule required username="u;"#,
            r#"org.x.PlainLoginModule maybe username="u";"#,
            ";",
            "",
        ] {
            assert!(parse_jaas(bad).is_err(), "{bad}");
        }
    }

    // Properties to settings: librdkafka names and Java's JAAS both give the credentials;
    // a SASL protocol without them, an unknown protocol or mechanism, a JAAS module of the
    // other mechanism, a JKS truststore and an encrypted key are refused with the property
    // named; PLAINTEXT builds no TLS config.
    #[test]
    fn properties_to_security() {
        let s = Security::from_properties(&props(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-256\nsasl.username=a\nsasl.password=b\n",
        ))
        .unwrap();
        assert_eq!(s.protocol, SecurityProtocol::SaslPlaintext);
        let sasl = s.sasl.clone().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Scram(Mechanism::Sha256));
        assert_eq!((sasl.username.as_str(), sasl.password.as_str()), ("a", "b"));
        assert!(s.tls.is_none());
        assert!(!format!("{s:?}").contains("\"b\""));
        let s = Security::from_properties(&props(
            "security.protocol=sasl_plaintext\nsasl.mechanism=plain\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p\";\n",
        ))
        .unwrap();
        assert_eq!(s.sasl.unwrap().mechanism, SaslMechanism::Plain);
        let s = Security::from_properties(&props("")).unwrap();
        assert_eq!(s.protocol, SecurityProtocol::Plaintext);
        for (bad, needle) in [
            ("security.protocol=SASL_PLAINTEXT\n", "sasl.mechanism"),
            (
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n",
                "sasl.username",
            ),
            ("security.protocol=TLS\n", "security.protocol"),
            (
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=GSSAPI\n",
                "sasl.mechanism",
            ),
            (
                "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=SCRAM-SHA-512\nsasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p\";\n",
                "PlainLoginModule",
            ),
            (
                "security.protocol=SSL\nssl.truststore.type=JKS\n",
                "ssl.truststore.type",
            ),
            (
                "security.protocol=SSL\nssl.key.password=x\n",
                "ssl.key.password",
            ),
            (
                "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n",
                "/nonexistent/ca.pem",
            ),
        ] {
            let e = Security::from_properties(&props(bad)).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn server_names() {
        assert_eq!(
            server_name("localhost:9092").unwrap(),
            ServerName::try_from("localhost").unwrap()
        );
        assert!(matches!(
            server_name("127.0.0.1:9092").unwrap(),
            ServerName::IpAddress(_)
        ));
        assert!(matches!(
            server_name("[::1]:9092").unwrap(),
            ServerName::IpAddress(_)
        ));
    }
}
