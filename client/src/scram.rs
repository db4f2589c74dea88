//! SCRAM-SHA-256 and SCRAM-SHA-512 (RFC 5802, RFC 7677) as Kafka speaks them: the
//! mechanisms and their primitives (SHA-2, HMAC, PBKDF2 from the RustCrypto crates), and the
//! client's side of the exchange (`ScramClient`) that `conn` runs. The broker's side
//! (`ScramServer`, stored credentials) is in the broker's `sasl::scram` and uses these.
//!
//! Runs on: any executor running a client or a broker connection; pure (no I/O, no runtime).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Kafka's lower bound on SCRAM iterations (ScramMechanism.minIterations).
pub const ITERATIONS_MIN: i32 = 4096;
/// Kafka's upper bound on SCRAM iterations (AlterUserScramCredentials refuses more).
pub const ITERATIONS_MAX: i32 = 16384;

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

    /// HMAC with this mechanism's hash.
    pub fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
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

    /// This mechanism's hash.
    pub fn hash(self, data: &[u8]) -> Vec<u8> {
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
}

/// Why an exchange failed. Logged on the broker only; the client is told only that
/// authentication failed.
#[derive(Debug, PartialEq)]
pub struct ScramError(pub String);

/// RFC 5802 saslname escaping: `,` is `=2C` and `=` is `=3D`.
pub fn escape_name(s: &str) -> String {
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
