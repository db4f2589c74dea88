//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the server's
//! side of the exchange, and the credentials it stores (salt, iterations, StoredKey,
//! ServerKey; never the password); and the client's side (`ScramClient`) that the
//! project's Kafka client (`client::conn`) runs.
//!
//! Runs on: any shard, inside a connection's read loop (and any executor running a
//! client); pure (no I/O, no runtime). The
//! primitives (SHA-2, HMAC, PBKDF2) are the RustCrypto crates'.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

use crate::metadata::ScramCredential;

/// Kafka's lower bound on SCRAM iterations (ScramMechanism.minIterations).
pub const ITERATIONS_MIN: i32 = 4096;
/// Kafka's upper bound on SCRAM iterations (AlterUserScramCredentials refuses more).
pub const ITERATIONS_MAX: i32 = 16384;
/// Bytes of random server nonce (hex-encoded into the exchange).
const SERVER_NONCE_BYTES: usize = 24;
/// Longest SCRAM user name accepted (bytes).
pub const USER_NAME_MAX_BYTES: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Sha256,
    Sha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 2] = [Mechanism::Sha256, Mechanism::Sha512];

    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Sha256 => "SCRAM-SHA-256",
            Mechanism::Sha512 => "SCRAM-SHA-512",
        }
    }

    pub fn from_name(s: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == s)
    }

    /// Kafka's ScramMechanism type in AlterUserScramCredentials (1 = SHA-256, 2 = SHA-512).
    pub fn kafka_type(self) -> i8 {
        match self {
            Mechanism::Sha256 => 1,
            Mechanism::Sha512 => 2,
        }
    }

    pub fn from_kafka_type(t: i8) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.kafka_type() == t)
    }

    /// Bytes of the hash (and so of SaltedPassword, StoredKey, ServerKey, proofs).
    pub fn digest_bytes(self) -> usize {
        match self {
            Mechanism::Sha256 => 32,
            Mechanism::Sha512 => 64,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => {
                let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
            Mechanism::Sha512 => {
                let mut m = <Hmac<Sha512> as Mac>::new_from_slice(key)
                    .expect("HMAC accepts keys of any length");
                m.update(data);
                m.finalize().into_bytes().to_vec()
            }
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::Sha256 => Sha256::digest(data).to_vec(),
            Mechanism::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// RFC 5802's SaltedPassword = Hi(password, salt, i) (PBKDF2 with this HMAC).
    pub fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0u8; self.digest_bytes()];
        match self {
            Mechanism::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            Mechanism::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }

    /// What the server keeps of a SaltedPassword (AlterUserScramCredentials sends the
    /// salted password, never the password).
    pub fn credential(
        self,
        salted_password: &[u8],
        salt: &[u8],
        iterations: i32,
    ) -> ScramCredential {
        let client_key = self.hmac(salted_password, b"Client Key");
        ScramCredential {
            salt: salt.to_vec(),
            iterations,
            stored_key: self.hash(&client_key),
            server_key: self.hmac(salted_password, b"Server Key"),
        }
    }

    /// A new credential for `password` with a random salt.
    pub fn new_credential(
        self,
        password: &str,
        iterations: i32,
    ) -> Result<ScramCredential, String> {
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

/// Why an exchange failed. Logged on the broker only; the client is told only that
/// authentication failed.
#[derive(Debug, PartialEq)]
pub struct ScramError(pub String);

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

/// RFC 5802 saslname escaping: `,` is `=2C` and `=` is `=3D`.
fn escape_name(s: &str) -> String {
    s.replace('=', "=3D").replace(',', "=2C")
}

/// Bytes of random client nonce (hex-encoded into the exchange).
const CLIENT_NONCE_BYTES: usize = 24;

/// The client's side of one SCRAM exchange (RFC 5802, no channel binding), as Kafka
/// clients speak it: `first` -> server-first -> `final_message` -> server-final ->
/// `verify_server`. Pure; used by the project's Kafka client (`client::conn`).
pub struct ScramClient {
    mechanism: Mechanism,
    password: String,
    client_first_bare: String,
    nonce: String,
    /// The ServerSignature the server must prove, once the final message is built.
    expected_server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// A client for `user` with a random nonce.
    pub fn new(
        mechanism: Mechanism,
        user: &str,
        password: &str,
    ) -> Result<ScramClient, ScramError> {
        let mut nonce = [0u8; CLIENT_NONCE_BYTES];
        getrandom::getrandom(&mut nonce).map_err(|e| ScramError(format!("no randomness: {e}")))?;
        let hex: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        Ok(ScramClient::with_nonce(mechanism, user, password, hex))
    }

    /// With a chosen client nonce: for the RFC test vectors.
    pub fn with_nonce(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        nonce: String,
    ) -> ScramClient {
        ScramClient {
            mechanism,
            password: password.to_owned(),
            client_first_bare: format!("n={},r={nonce}", escape_name(user)),
            nonce,
            expected_server_signature: None,
        }
    }

    /// The client-first-message (gs2 header `n,,`: no channel binding, no authzid).
    pub fn first_message(&self) -> Vec<u8> {
        format!("n,,{}", self.client_first_bare).into_bytes()
    }

    /// The client-final-message answering the server-first-message. Refuses a server
    /// nonce that does not extend ours and iteration counts outside Kafka's bounds (a
    /// hostile server must not make the client spin in PBKDF2).
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let server_first = std::str::from_utf8(server_first)
            .map_err(|_| ScramError("server-first-message is not UTF-8".into()))?;
        let (mut nonce, mut salt, mut iterations) = (None, None, None);
        for part in server_first.split(',') {
            match part.get(..2) {
                Some("r=") => nonce = Some(&part[2..]),
                Some("s=") => {
                    salt = Some(
                        B64.decode(&part[2..])
                            .map_err(|_| ScramError("salt is not base64".into()))?,
                    )
                }
                Some("i=") => iterations = part[2..].parse::<i32>().ok(),
                Some("e=") => return Err(ScramError(format!("server error: {}", &part[2..]))),
                _ => {}
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(ScramError(format!(
                "server-first-message lacks r=, s= or i=: {server_first}"
            )));
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError(
                "server nonce does not extend the client's".into(),
            ));
        }
        if !(ITERATIONS_MIN..=ITERATIONS_MAX).contains(&iterations) {
            return Err(ScramError(format!(
                "server asks for {iterations} iterations (allowed {ITERATIONS_MIN}..={ITERATIONS_MAX})"
            )));
        }
        let m = self.mechanism;
        let salted = m.salted_password(self.password.as_bytes(), &salt, iterations as u32);
        let client_key = m.hmac(&salted, b"Client Key");
        let stored_key = m.hash(&client_key);
        // "biws" is base64("n,,"), the gs2 header of the first message.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = m.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = m.hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(m.hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final-message: the server proves it knows the credential.
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let msg = std::str::from_utf8(server_final)
            .map_err(|_| ScramError("server-final-message is not UTF-8".into()))?;
        if let Some(e) = msg.strip_prefix("e=") {
            return Err(ScramError(format!("server error: {e}")));
        }
        let Some(expected) = &self.expected_server_signature else {
            return Err(ScramError(
                "server-final-message before the final message".into(),
            ));
        };
        let got = msg
            .split(',')
            .find_map(|p| p.strip_prefix("v="))
            .and_then(|v| B64.decode(v).ok())
            .ok_or_else(|| ScramError("server-final-message has no verifier".into()))?;
        if bool::from(got.ct_eq(expected)) {
            Ok(())
        } else {
            Err(ScramError(
                "the server's signature is wrong (not the real server?)".into(),
            ))
        }
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
