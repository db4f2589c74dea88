//! TLS on SSL and SASL_SSL listeners with rustls (ring provider; no OpenSSL): the server
//! certificate and key from PEM files, optional client certificates (Kafka's
//! ssl.client.auth = none | requested | required) checked against a CA bundle, and the
//! principal a client certificate gives (`User:` + its subject, RFC 2253 order as Kafka's
//! X500Principal.getName()).
//!
//! Runs on: start-up (validation) and every shard, each building its own `ServerConfig`
//! so the session cache rustls keeps behind a lock is never shared between cores.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// Bumped by SIGHUP (`server`): a shard whose TLS config is of an older generation
/// rebuilds it from the files before its next TLS handshake.
pub static TLS_GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Kafka's ssl.client.auth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    None,
    Requested,
    Required,
}

impl ClientAuth {
    pub fn parse(s: &str) -> Option<ClientAuth> {
        Some(match s.to_ascii_lowercase().as_str() {
            "none" => ClientAuth::None,
            "requested" => ClientAuth::Requested,
            "required" => ClientAuth::Required,
            _ => return None,
        })
    }
}

/// Where the TLS material is (`--tls-cert`, `--tls-key`, `--tls-ca`) and whether client
/// certificates are asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsSettings {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

impl TlsSettings {
    /// These settings with the listener's own ssl.client.auth.
    pub fn for_listener(&self, l: &crate::config::Listener) -> TlsSettings {
        TlsSettings {
            client_auth: l.ssl_client_auth,
            ..self.clone()
        }
    }
}

/// Builds a server config from the files (read now: a shard that starts reads the
/// current files).
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&s.cert)
        .map_err(|e| format!("cannot read certificates from {}: {e}", s.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", s.cert.display()))?;
    if chain.is_empty() {
        return Err(format!("no certificate in {}", s.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&s.key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", s.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS versions: {e}"))?;
    let builder = match (s.client_auth, &s.ca) {
        (ClientAuth::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err("client certificates (ssl.client.auth) need --tls-ca".into());
        }
        (auth, Some(ca)) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("cannot read CA certificates from {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("bad CA certificate in {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("CA certificate in {}: {e}", ca.display()))?;
            }
            let mut v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            if auth == ClientAuth::Requested {
                v = v.allow_unauthenticated();
            }
            builder.with_client_cert_verifier(
                v.build()
                    .map_err(|e| format!("client certificate verifier: {e}"))?,
            )
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        format!(
            "certificate {} and key {}: {e}",
            s.cert.display(),
            s.key.display()
        )
    })?;
    Ok(Arc::new(config))
}

/// Kafka's principal of a client certificate: `User:` + the subject in RFC 2253 form
/// (most specific attribute first, e.g. `User:CN=alice,O=example`).
pub fn principal_of(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let oids = x509_parser::objects::oid_registry();
    let mut rdns: Vec<String> = Vec::new();
    for rdn in parsed.subject().iter() {
        let parts: Vec<String> = rdn
            .iter()
            .map(|atv| {
                let name = x509_parser::objects::oid2abbrev(atv.attr_type(), oids)
                    .map(str::to_string)
                    .unwrap_or_else(|_| atv.attr_type().to_id_string());
                let value = atv.as_str().map(escape_dn).unwrap_or_default();
                format!("{name}={value}")
            })
            .collect();
        rdns.push(parts.join("+"));
    }
    rdns.reverse();
    Some(format!("User:{}", rdns.join(",")))
}

/// RFC 2253 escaping of an attribute value.
fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        if matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == v.chars().count() && c == ' ')
        {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    struct Pki {
        dir: tempfile::TempDir,
        ca: rcgen::CertifiedKey,
    }

    fn pki() -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), cert.pem()).unwrap();
        Pki {
            dir,
            ca: rcgen::CertifiedKey {
                cert,
                key_pair: key,
            },
        }
    }

    /// A certificate signed by the CA: (cert PEM, key PEM, DER).
    fn issue(pki: &Pki, sans: &[&str], dn: &[(rcgen::DnType, &str)]) -> (String, String, Vec<u8>) {
        issue_valid(pki, sans, dn, false)
    }

    /// As `issue`, valid only until `not_after` when given.
    fn issue_valid(
        pki: &Pki,
        sans: &[&str],
        dn: &[(rcgen::DnType, &str)],
        expired: bool,
    ) -> (String, String, Vec<u8>) {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, &pki.ca.cert, &pki.ca.key_pair)
            .unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn settings(pki: &Pki, auth: ClientAuth) -> TlsSettings {
        let (cert, key, _) = issue(
            pki,
            &["localhost"],
            &[(rcgen::DnType::CommonName, "broker")],
        );
        std::fs::write(pki.dir.path().join("server.pem"), cert).unwrap();
        std::fs::write(pki.dir.path().join("server.key"), key).unwrap();
        TlsSettings {
            cert: pki.dir.path().join("server.pem"),
            key: pki.dir.path().join("server.key"),
            ca: Some(pki.dir.path().join("ca.pem")),
            client_auth: auth,
        }
    }

    /// Runs a TLS handshake in memory; returns the server's view of the client chain, or
    /// the handshake's error.
    fn handshake(
        server: Arc<ServerConfig>,
        pki: &Pki,
        client_cert: Option<(String, String)>,
    ) -> Result<Option<Vec<CertificateDer<'static>>>, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca.cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let b = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match client_cert {
            None => b.with_no_client_auth(),
            Some((cert, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
        };
        let mut c =
            rustls::ClientConnection::new(Arc::new(cfg), "localhost".try_into().unwrap()).unwrap();
        let mut s = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                s.read_tls(&mut rd).unwrap();
            }
            s.process_new_packets().map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            let mut rd = &buf[..];
            while !rd.is_empty() {
                c.read_tls(&mut rd).unwrap();
            }
            c.process_new_packets().map_err(|e| e.to_string())?;
            if !c.is_handshaking() && !s.is_handshaking() {
                // Application data flows both ways.
                c.writer().write_all(b"ping").unwrap();
                let mut buf = Vec::new();
                c.write_tls(&mut buf).unwrap();
                s.read_tls(&mut &buf[..]).unwrap();
                s.process_new_packets().map_err(|e| e.to_string())?;
                let mut got = [0u8; 4];
                s.reader().read_exact(&mut got).unwrap();
                assert_eq!(&got, b"ping");
                return Ok(s.peer_certificates().map(|c| c.to_vec()));
            }
        }
        Err("handshake did not finish".into())
    }

    // Certificates made at test time (rcgen): a server config from PEM files completes a
    // handshake; with ssl.client.auth=required a client without a certificate is refused
    // and one with a CA-signed certificate is accepted, its subject becoming the principal;
    // with requested both are accepted; an expired client certificate is refused.
    #[test]
    fn server_and_client_certificates() {
        let pki = pki();
        let plain = server_config(&settings(&pki, ClientAuth::None)).unwrap();
        assert_eq!(handshake(plain, &pki, None).unwrap(), None);
        let (cc, ck, _) = issue(
            &pki,
            &[],
            &[
                (rcgen::DnType::OrganizationName, "example"),
                (rcgen::DnType::CommonName, "alice"),
            ],
        );
        let required = server_config(&settings(&pki, ClientAuth::Required)).unwrap();
        assert!(handshake(required.clone(), &pki, None).is_err());
        let chain = handshake(required, &pki, Some((cc.clone(), ck.clone())))
            .unwrap()
            .unwrap();
        assert_eq!(
            principal_of(&chain[0]).as_deref(),
            Some("User:CN=alice,O=example")
        );
        // An expired client certificate from the right CA is refused.
        let (ec, ek, _) = issue_valid(&pki, &[], &[(rcgen::DnType::CommonName, "old")], true);
        let required = server_config(&settings(&pki, ClientAuth::Required)).unwrap();
        let err = handshake(required, &pki, Some((ec, ek))).unwrap_err();
        assert!(err.to_lowercase().contains("expired"), "{err}");
        let requested = server_config(&settings(&pki, ClientAuth::Requested)).unwrap();
        assert_eq!(handshake(requested.clone(), &pki, None).unwrap(), None);
        assert!(
            handshake(requested, &pki, Some((cc, ck)))
                .unwrap()
                .is_some()
        );
    }

    // Missing or wrong files are start-up errors naming the file, not panics.
    #[test]
    fn bad_files_are_errors() {
        let pki = pki();
        let mut s = settings(&pki, ClientAuth::None);
        s.key = pki.dir.path().join("ca.pem");
        assert!(server_config(&s).unwrap_err().contains("ca.pem"));
        s.cert = pki.dir.path().join("missing.pem");
        assert!(server_config(&s).unwrap_err().contains("missing.pem"));
        let mut s = settings(&pki, ClientAuth::Required);
        s.ca = None;
        assert!(server_config(&s).is_err());
        assert_eq!(escape_dn("a,b"), "a\\,b");
    }
}
