//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the server's
//! side of the exchange and the credentials it stores (salt, iterations, StoredKey,
//! ServerKey; never the password). The mechanisms, their primitives and the client's side
//! (`ScramClient`) are the client crate's (`osprey_client::scram`), re-exported here.
//!
//! Runs on: any shard, inside a connection's read loop; pure (no I/O, no runtime).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use subtle::ConstantTimeEq;

pub use osprey_client::scram::{
    ITERATIONS_MAX, ITERATIONS_MIN, Mechanism, ScramClient, ScramError, escape_name,
};

use crate::metadata::ScramCredential;

/// Bytes of random server nonce (hex-encoded into the exchange).
const SERVER_NONCE_BYTES: usize = 24;
/// Longest SCRAM user name accepted (bytes).
pub const USER_NAME_MAX_BYTES: usize = 256;

/// The credentials a server stores for a mechanism.
pub trait CredentialExt {
    fn credential(self, salted_password: &[u8], salt: &[u8], iterations: i32) -> ScramCredential;
    fn new_credential(self, password: &str, iterations: i32) -> Result<ScramCredential, String>;
}

impl CredentialExt for Mechanism {
    /// What the server keeps of a SaltedPassword (AlterUserScramCredentials sends the
    /// salted password, never the password).
    fn credential(self, salted_password: &[u8], salt: &[u8], iterations: i32) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
        }
    }

    /// A new credential for `password` with a random salt.
    fn new_credential(self, password: &str, iterations: i32) -> Result<ScramCredential, String> {
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(format!(
                "iterations must be {ITERATIONS_MIN}..={ITERATIONS_MAX}"
            ));
        }
        let mut salt = [0u8; 16];
        getrandom::getrandom(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
        let salted = self.salted_password(password.as_bytes(), &salt, iterations as u32);
        Ok(self.credential(&salted, &salt, iterations))
    }
}

/// What the server answers a client message with.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Send this and wait for the next client message.
    Continue(Vec<u8>),
    /// Authenticated as `user`; send the final server message.
    Done { user: String, reply: Vec<u8> },
}

enum State {
    First,
    SentFirst {
        user: String,
        /// `None` for an unknown user: the exchange goes on with a made-up salt and fails
        /// at the proof, so the answers never tell unknown users from wrong passwords.
        credential: Option<ScramCredential>,
        gs2_header: String,
        client_first_bare: String,
        server_first: String,
        nonce: String,
    },
    Finished,
}

/// The server's side of one SCRAM exchange.
pub struct ScramServer {
    mechanism: Mechanism,
    state: State,
    server_nonce: String,
}

fn attr(part: &str, name: char) -> Result<&str, ScramError> {
    let mut chars = part.chars();
    if chars.next() == Some(name) && chars.next() == Some('=') {
        Ok(&part[2..])
    } else {
        Err(ScramError(format!(
            "expected attribute `{name}=`, got `{part}`"
        )))
    }
}

/// RFC 5802 saslname: `=2C` is `,` and `=3D` is `=`; any other `=` is invalid.
fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=2C") => out.push(','),
            Some("=3D") => out.push('='),
            _ => return Err(ScramError("invalid escape in user name".into())),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

impl ScramServer {
    pub fn new(mechanism: Mechanism) -> Result<ScramServer, ScramError> {
        let mut nonce = [0u8; SERVER_NONCE_BYTES];
        getrandom::getrandom(&mut nonce).map_err(|e| ScramError(format!("no randomness: {e}")))?;
        // Alphanumeric, as Kafka's own server nonces.
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Ok(ScramServer::with_nonce(mechanism, hex))
    }

    /// With a chosen server nonce: for the RFC test vectors.
    pub fn with_nonce(mechanism: Mechanism, server_nonce: String) -> ScramServer {
        ScramServer {
            mechanism,
            state: State::First,
            server_nonce,
        }
    }

    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// One client message. `lookup` finds the stored credential of a user of this
    /// mechanism; `fake_salt` makes up a stable salt for users it does not know.
    pub fn step(
        &mut self,
        input: &[u8],
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Step, ScramError> {
        let msg = std::str::from_utf8(input)
            .map_err(|_| ScramError("SCRAM message is not UTF-8".into()))?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::First => {
                let (step, next) = self.first(msg, lookup, fake_salt)?;
                self.state = next;
                Ok(step)
            }
            State::SentFirst {
                user,
                credential,
                gs2_header,
                client_first_bare,
                server_first,
                nonce,
            } => {
                let parts: Vec<&str> = msg.split(',').collect();
                if parts.len() < 3 {
                    return Err(ScramError("client-final-message too short".into()));
                }
                let cbind = attr(parts[0], 'c')?;
                let r = attr(parts[1], 'r')?;
                let proof = attr(parts[parts.len() - 1], 'p')?;
                if B64.decode(cbind).ok().as_deref() != Some(gs2_header.as_bytes()) {
                    return Err(ScramError("channel binding does not match".into()));
                }
                if r != nonce {
                    // Exactly the combined nonce, as RFC 5802 requires (Kafka versions
                    // that compare with endsWith() are laxer): librdkafka 2.0 (Debian's
                    // kcat) sends its client nonce twice here and is refused.
                    return Err(ScramError("nonce does not match".into()));
                }
                let proof = B64
                    .decode(proof)
                    .map_err(|_| ScramError("proof is not base64".into()))?;
                let without_proof = &msg[..msg.len() - parts[parts.len() - 1].len() - 1];
                let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
                let Some(cred) = credential else {
                    return Err(ScramError(format!("unknown user {user}")));
                };
                let m = self.mechanism;
                if proof.len() != m.digest_bytes() || cred.stored_key.len() != m.digest_bytes() {
                    return Err(ScramError("proof of the wrong length".into()));
                }
                let client_signature = m.hmac(&cred.stored_key, auth_message.as_bytes());
                let client_key: Vec<u8> = proof
                    .iter()
                    .zip(&client_signature)
                    .map(|(a, b)| a ^ b)
                    .collect();
                let ok: bool = m.hash(&client_key).ct_eq(&cred.stored_key).into();
                if !ok {
                    return Err(ScramError(format!("wrong proof for user {user}")));
                }
                let server_signature = m.hmac(&cred.server_key, auth_message.as_bytes());
                Ok(Step::Done {
                    user,
                    reply: format!("v={}", B64.encode(server_signature)).into_bytes(),
                })
            }
            State::Finished => Err(ScramError("exchange already finished".into())),
        }
    }

    fn first(
        &self,
        msg: &str,
        lookup: impl FnOnce(&str) -> Option<ScramCredential>,
        fake_salt: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<(Step, State), ScramError> {
        // gs2-header: cbind flag, authzid, then the client-first-message-bare.
        let mut it = msg.splitn(3, ',');
        let (flag, authzid, bare) = match (it.next(), it.next(), it.next()) {
            (Some(f), Some(a), Some(b)) => (f, a, b),
            _ => return Err(ScramError("client-first-message too short".into())),
        };
        if flag != "n" && flag != "y" {
            return Err(ScramError("channel binding is not supported".into()));
        }
        let gs2_header = format!("{flag},{authzid},");
        let mut parts = bare.split(',');
        let user = unescape_name(attr(parts.next().unwrap_or(""), 'n')?)?;
        let client_nonce = attr(parts.next().unwrap_or(""), 'r')?;
        if user.is_empty() || user.len() > USER_NAME_MAX_BYTES {
            return Err(ScramError("user name empty or too long".into()));
        }
        if client_nonce.is_empty() || !client_nonce.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err(ScramError("invalid client nonce".into()));
        }
        if !authzid.is_empty() && unescape_name(attr(authzid, 'a')?)? != user {
            return Err(ScramError("authorization id differs from the user".into()));
        }
        let credential = lookup(&user);
        let (salt, iterations) = match &credential {
            Some(c) => (c.salt.clone(), c.iterations),
            None => (fake_salt(&user), ITERATIONS_MIN),
        };
        let nonce = format!("{client_nonce}{}", self.server_nonce);
        let server_first = format!("r={nonce},s={},i={iterations}", B64.encode(&salt));
        Ok((
            Step::Continue(server_first.clone().into_bytes()),
            State::SentFirst {
                user,
                credential,
                gs2_header,
                client_first_bare: bare.to_string(),
                server_first,
                nonce,
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_fake(_: &str) -> Vec<u8> {
        panic!("the user is known")
    }

    // RFC 7677 section 3: user "user", password "pencil", the exact messages of its example
    // exchange (client nonce, server nonce, salt and iterations as given) reproduce the
    // server's first message, accept the client's proof and give the RFC's server signature.
    #[test]
    fn rfc7677_sha256_vector() {
        let m = Mechanism::Sha256;
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = m.salted_password(b"pencil", &salt, 4096);
        let cred = m.credential(&salted, &salt, 4096);
        let mut s = ScramServer::with_nonce(m, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0".into());
        let first = s
            .step(
                b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
                |u| (u == "user").then(|| cred.clone()),
                no_fake,
            )
            .unwrap();
        assert_eq!(
            first,
            Step::Continue(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
                    .to_vec()
            )
        );
        let last = s
            .step(
                b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
                |_| None,
                no_fake,
            )
            .unwrap();
        assert_eq!(
            last,
            Step::Done {
                user: "user".into(),
                reply: b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=".to_vec()
            }
        );
    }

    // RFC 6070's PBKDF2-HMAC-SHA1 vectors do not cover SHA-2; this is the published
    // PBKDF2-HMAC-SHA256 vector for "password"/"salt", 4096 iterations (RFC 7914 style
    // tables), checking Hi() is wired to the right PRF and iteration count.
    #[test]
    fn pbkdf2_sha256_vector() {
        let out = Mechanism::Sha256.salted_password(b"password", b"salt", 4096);
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "c5e478d59288c841aa530db6845c4c8d962893a001ce4e11a4963873aa98134a"
        );
    }

    /// The client's side, for round trips: the proof for `password`.
    fn client_final(
        m: Mechanism,
        password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> String {
        let mut salt = None;
        let mut iterations = 0;
        let mut nonce = "";
        for p in server_first.split(',') {
            match &p[..2] {
                "r=" => nonce = &p[2..],
                "s=" => salt = Some(B64.decode(&p[2..]).unwrap()),
                "i=" => iterations = p[2..].parse().unwrap(),
                _ => {}
            }
        }
        let salted = m.salted_password(password.as_bytes(), &salt.unwrap(), iterations);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored = m.hash(&client_key);
        let without_proof = format!("c=biws,r={nonce}");
        let auth = format!("{client_first_bare},{server_first},{without_proof}");
        let sig = m.hmac(&stored, auth.as_bytes());
        let proof: Vec<u8> = client_key.iter().zip(&sig).map(|(a, b)| a ^ b).collect();
        format!("{without_proof},p={}", B64.encode(proof))
    }

    fn exchange(
        m: Mechanism,
        stored: &ScramCredential,
        user: &str,
        password: &str,
    ) -> Result<Step, ScramError> {
        let mut s = ScramServer::new(m).unwrap();
        let bare = format!("n={user},r=clientnonce123");
        let Step::Continue(first) = s.step(
            format!("n,,{bare}").as_bytes(),
            |u| (u == "alice").then(|| stored.clone()),
            |_| b"fake-salt-16byte".to_vec(),
        )?
        else {
            panic!("first step finishes nothing")
        };
        let first = String::from_utf8(first).unwrap();
        let fin = client_final(m, password, &bare, &first);
        s.step(fin.as_bytes(), |_| None, |_| Vec::new())
    }

    // Both mechanisms: the right password authenticates; a wrong password and an unknown
    // user both fail at the proof (the unknown user got a salt like any other).
    #[test]
    fn round_trips_and_failures() {
        for m in Mechanism::ALL {
            let cred = m.new_credential("secret", 4096).unwrap();
            assert!(
                matches!(exchange(m, &cred, "alice", "secret"), Ok(Step::Done { user, .. }) if user == "alice")
            );
            assert!(exchange(m, &cred, "alice", "wrong").is_err());
            assert!(exchange(m, &cred, "mallory", "secret").is_err());
        }
    }

    // Malformed first messages are refused: channel binding asked, bad escapes, no nonce,
    // an authorization id naming someone else.
    #[test]
    fn malformed_first_messages() {
        for bad in [
            &b"p=tls-unique,,n=alice,r=abc"[..],
            b"n,,n=al=ice,r=abc",
            b"n,,n=alice",
            b"n,a=bob,n=alice,r=abc",
            b"n,,",
            b"\xff",
        ] {
            let mut s = ScramServer::new(Mechanism::Sha256).unwrap();
            assert!(s.step(bad, |_| None, |_| vec![0; 16]).is_err(), "{bad:?}");
        }
        assert_eq!(unescape_name("a=2Cb=3Dc").unwrap(), "a,b=c");
    }

    // RFC 7677 section 3 from the client's side: with the RFC's client nonce the client
    // sends the RFC's first message, answers the RFC's server-first-message with exactly
    // the RFC's client-final-message (proof included), accepts the RFC's server signature
    // and refuses a tampered one.
    #[test]
    fn rfc7677_sha256_client_vector() {
        let mut c = ScramClient::with_nonce(
            Mechanism::Sha256,
            "user",
            "pencil",
            "rOprNGfwEbeRWgbNEkqO".into(),
        );
        assert_eq!(c.first_message(), b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let fin = c
            .final_message(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
            .unwrap();
        assert_eq!(
            String::from_utf8(fin).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        c.verify_server(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
            .unwrap();
        assert!(
            c.verify_server(b"v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_err()
        );
        assert!(c.verify_server(b"e=invalid-proof").is_err());
    }

    // The client against this file's server, both mechanisms, a user name needing
    // escapes: the right password authenticates both ways, a wrong one is refused by the
    // server; a server nonce not extending the client's, or a hostile iteration count, is
    // refused by the client before any PBKDF2 work.
    #[test]
    fn client_against_server() {
        for m in Mechanism::ALL {
            let cred = m.new_credential("secret", 4096).unwrap();
            for (password, ok) in [("secret", true), ("wrong", false)] {
                let mut c = ScramClient::new(m, "al,i=ce", password).unwrap();
                let mut s = ScramServer::new(m).unwrap();
                let Step::Continue(first) = s
                    .step(
                        &c.first_message(),
                        |u| (u == "al,i=ce").then(|| cred.clone()),
                        no_fake,
                    )
                    .unwrap()
                else {
                    panic!("the first step finishes nothing")
                };
                let fin = c.final_message(&first).unwrap();
                match s.step(&fin, |_| None, no_fake) {
                    Ok(Step::Done { user, reply }) => {
                        assert!(ok);
                        assert_eq!(user, "al,i=ce");
                        c.verify_server(&reply).unwrap();
                    }
                    other => assert!(!ok, "{:?}", other.err()),
                }
            }
        }
        let mut c = ScramClient::with_nonce(Mechanism::Sha256, "u", "p", "abc".into());
        assert!(c.final_message(b"r=xyzdef,s=AAAA,i=4096").is_err());
        assert!(c.final_message(b"r=abc,s=AAAA,i=4096").is_err());
        assert!(c.final_message(b"r=abcdef,s=AAAA,i=100000000").is_err());
        assert!(c.final_message(b"r=abcdef,i=4096").is_err());
        assert!(c.final_message(b"\xff").is_err());
    }
}
