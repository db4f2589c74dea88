//! The `osprey` command line over secured listeners: a broker with SSL and SASL_SSL
//! listeners (certificates made here with rcgen, no key in the repository), and the CLI
//! configured only through `--command-config` files in Kafka's client properties format.

mod common;

use std::path::{Path, PathBuf};

use common::cli::{osprey, osprey_with_input};
use common::{Broker, tmpdir};

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate
/// (CN=alice), as PEM files in `dir`.
fn make_pki(dir: &Path) {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "client-security test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    for (name, sans, cn) in [
        (
            "server",
            vec!["localhost".to_string(), "127.0.0.1".to_string()],
            "localhost",
        ),
        ("client", vec![], "alice"),
    ] {
        let mut p = rcgen::CertificateParams::new(sans).unwrap();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    // A second CA that signed nothing the broker has: trusting only it must fail.
    let mut other = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_key = rcgen::KeyPair::generate().unwrap();
    std::fs::write(
        dir.join("other-ca.pem"),
        other.self_signed(&other_key).unwrap().pem(),
    )
    .unwrap();
}

struct Secured {
    broker: Broker,
    dir: tempfile::TempDir,
}

impl Secured {
    fn path(&self, f: &str) -> PathBuf {
        self.dir.path().join(f)
    }

    fn listener(&self, name: &str) -> String {
        self.broker.listeners[name].to_string()
    }

    /// Writes a properties file and returns its path.
    fn props(&self, name: &str, text: &str) -> String {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }
}

/// A broker with PLAINTEXT, SSL and SASL_SSL listeners (client certificates requested),
/// a SCRAM-SHA-512 user `alice` created before the start and a PLAIN user `bob`.
fn secured_broker() -> Secured {
    let dir = tmpdir();
    make_pki(dir.path());
    let data = dir.path().join("data");
    let r = osprey(&[
        "users",
        "create",
        "alice",
        "--mechanism",
        "SCRAM-SHA-512",
        "--password",
        "alice-secret",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(r.ok, "{r:?}");
    std::fs::write(dir.path().join("plain-users"), "bob = bob-secret\n").unwrap();
    let p = |f: &str| dir.path().join(f).to_string_lossy().into_owned();
    let broker = Broker::start_in(
        &data,
        1,
        &[
            "--listeners",
            "SSL://127.0.0.1:0,SASL_SSL://127.0.0.1:0",
            "--tls-cert",
            &p("server.pem"),
            "--tls-key",
            &p("server.key"),
            "--tls-ca",
            &p("ca.pem"),
            "--ssl-client-auth",
            "requested",
            "--sasl-plain-users",
            &p("plain-users"),
        ],
    );
    Secured { broker, dir }
}

/// Creates `topic`, lists it, produces three lines and consumes them back, all through
/// `props` against `bootstrap`.
fn round_trip(bootstrap: &str, props: &str, topic: &str) {
    let common = ["--bootstrap", bootstrap, "--command-config", props];
    let r = osprey(
        &[
            &["topics", "create", topic, "--partitions", "2"][..],
            &common,
        ]
        .concat(),
    );
    assert!(r.ok, "{r:?}");
    let r = osprey(&[&["topics", "list"][..], &common].concat());
    assert!(r.ok, "{r:?}");
    assert!(r.stdout.lines().any(|l| l.starts_with(topic)), "{r:?}");
    let r = osprey_with_input(
        &[&["produce", topic, "--key-separator", ":"][..], &common].concat(),
        b"k1:one\nk2:two\nk3:three\n",
    );
    assert!(r.ok, "{r:?}");
    let r = osprey(
        &[
            &["consume", topic, "--from-beginning", "--exit-at-end"][..],
            &common,
        ]
        .concat(),
    );
    assert!(r.ok, "{r:?}");
    let mut got: Vec<&str> = r.stdout.lines().collect();
    got.sort_unstable();
    assert_eq!(got, ["one", "three", "two"], "{r:?}");
}

// SASL_SSL with SCRAM-SHA-512 and with PLAIN given as Java JAAS lines (the broker's
// certificate checked against the test CA, host 127.0.0.1 against its IP SAN), and SSL with a client
// certificate (mTLS, librdkafka's property names): topics create/list, produce and
// consume each go through TLS and, on SASL_SSL, authenticate on every connection the CLI
// opens (bootstrap and each node).
#[test]
fn cli_round_trips_over_sasl_ssl_and_ssl() {
    let s = secured_broker();
    let ca = s.path("ca.pem");
    let sasl = s.props(
        "sasl-ssl.properties",
        &format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\n\
             sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n  \
             username=\"alice\" password=\"alice-secret\";\nssl.ca.location={}\n",
            ca.display()
        ),
    );
    round_trip(&s.listener("SASL_SSL"), &sasl, "secured-sasl");
    let ssl = s.props(
        "ssl.properties",
        &format!(
            "security.protocol=SSL\nssl.ca.location={}\nssl.certificate.location={}\nssl.key.location={}\n",
            ca.display(),
            s.path("client.pem").display(),
            s.path("client.key").display()
        ),
    );
    round_trip(&s.listener("SSL"), &ssl, "secured-ssl");
    // PLAIN over SASL_SSL, with the Java JAAS module of PLAIN.
    let plain = s.props(
        "plain.properties",
        &format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\
             sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username=\"bob\" password=\"bob-secret\";\n\
             ssl.ca.location={}\n",
            ca.display()
        ),
    );
    round_trip(&s.listener("SASL_SSL"), &plain, "secured-plain");
    // The cluster, group and user commands use the same settings.
    let bootstrap = s.listener("SASL_SSL");
    for cmd in [
        &["cluster", "info"][..],
        &["groups", "list"],
        &["users", "list"],
    ] {
        let r = osprey(&[cmd, &["--bootstrap", &bootstrap, "--command-config", &sasl]].concat());
        assert!(r.ok, "{cmd:?}: {r:?}");
        if cmd[0] == "users" {
            assert!(r.stdout.contains("alice"), "{r:?}");
        }
    }
}

// Refusals: a wrong password fails SASL authentication, a CA that did not sign the broker's
// certificate fails the TLS handshake, a plaintext client on the TLS port is told to use
// TLS, a missing CA file fails before connecting; each
// exits non-zero with what went wrong and a hint naming the property to fix, and the
// broker keeps serving the right settings afterwards.
#[test]
fn cli_refusals_are_clear() {
    let s = secured_broker();
    let ca = s.path("ca.pem");
    let sasl_ssl = s.listener("SASL_SSL");
    let wrong = s.props(
        "wrong.properties",
        &format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\n\
             sasl.password=not-her-password\nssl.ca.location={}\n",
            ca.display()
        ),
    );
    let r = osprey(&[
        "topics",
        "list",
        "--bootstrap",
        &sasl_ssl,
        "--command-config",
        &wrong,
    ]);
    assert!(!r.ok, "{r:?}");
    assert!(r.stderr.contains("SASL authentication"), "{r:?}");
    assert!(r.stderr.contains("sasl.password"), "{r:?}");
    let untrusted = s.props(
        "untrusted.properties",
        &format!(
            "security.protocol=SSL\nssl.ca.location={}\n",
            s.path("other-ca.pem").display()
        ),
    );
    let r = osprey(&[
        "topics",
        "list",
        "--bootstrap",
        &s.listener("SSL"),
        "--command-config",
        &untrusted,
    ]);
    assert!(!r.ok, "{r:?}");
    assert!(r.stderr.contains("TLS handshake"), "{r:?}");
    assert!(r.stderr.contains("ssl.ca.location"), "{r:?}");
    // A plaintext client on the TLS port is told the listener wants TLS.
    let r = osprey(&["topics", "list", "--bootstrap", &s.listener("SSL")]);
    assert!(!r.ok, "{r:?}");
    assert!(r.stderr.contains("security.protocol=SSL"), "{r:?}");
    let missing = s.props(
        "missing.properties",
        "security.protocol=SSL\nssl.ca.location=/nonexistent/ca.pem\n",
    );
    let r = osprey(&[
        "topics",
        "list",
        "--bootstrap",
        &s.listener("SSL"),
        "--command-config",
        &missing,
    ]);
    assert!(!r.ok, "{r:?}");
    assert!(r.stderr.contains("/nonexistent/ca.pem"), "{r:?}");
    let right = s.props(
        "right.properties",
        &format!(
            "security.protocol=SASL_SSL\nsasl.mechanism=SCRAM-SHA-512\nsasl.username=alice\n\
             sasl.password=alice-secret\nssl.ca.location={}\n",
            ca.display()
        ),
    );
    let r = osprey(&[
        "topics",
        "list",
        "--bootstrap",
        &sasl_ssl,
        "--command-config",
        &right,
    ]);
    assert!(r.ok, "{r:?}");
}
