//! SASL authentication of client connections on SASL_PLAINTEXT and SASL_SSL listeners:
//! the mechanisms (PLAIN against `--sasl-plain-users`, SCRAM-SHA-256/512 against the
//! credentials in the cluster metadata), one connection's exchange, and the throttle on
//! repeated failures.
//!
//! Runs on: any shard, inside a connection's read loop (the exchange decides what the
//! connection may send next, so it is never run concurrently with other requests of the
//! connection). Pure apart from the random nonces and the shard's failure counts.

pub mod scram;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::metadata::ClusterMeta;
use scram::{Mechanism, ScramServer, Step};

pub const PLAIN: &str = "PLAIN";

/// Kafka's sasl.server.max.receive.size default: the largest frame a connection may send
/// before it has authenticated.
pub const UNAUTHENTICATED_FRAME_MAX_BYTES: usize = 512 * 1024;
/// Kafka's connection.failed.authentication.delay.ms default: the answer to a failed
/// authentication waits at least this long, doubling per recent failure from that address.
pub const FAILED_AUTHENTICATION_DELAY: Duration = Duration::from_millis(100);
/// The longest a failed authentication's answer is held back.
pub const FAILED_AUTHENTICATION_DELAY_MAX: Duration = Duration::from_secs(5);
/// Failures from one address older than this are forgotten.
const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// Client addresses a shard remembers failures of; past it the oldest are dropped.
pub const FAILURE_TRACKED_ADDRESSES_MAX: usize = 10_000;
/// Users a `--sasl-plain-users` file may hold.
pub const PLAIN_USERS_MAX: usize = 100_000;

/// The mechanisms names Kafka clients send in SaslHandshake.
pub fn known_mechanism(name: &str) -> bool {
    name == PLAIN || Mechanism::from_name(name).is_some()
}

/// PLAIN's users and passwords (`--sasl-plain-users FILE`, lines `name = password`); its
/// Debug never shows the passwords.
#[derive(Clone, Default)]
pub struct PlainUsers(BTreeMap<String, String>);

impl std::fmt::Debug for PlainUsers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainUsers({} users)", self.0.len())
    }
}

impl PlainUsers {
    pub fn load(path: &std::path::Path) -> Result<PlainUsers, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut users = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, password) = line.split_once('=').ok_or_else(|| {
                format!("{}:{}: expected `name = password`", path.display(), n + 1)
            })?;
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("{}:{}: empty user name", path.display(), n + 1));
            }
            users.insert(name.to_string(), password.trim().to_string());
            if users.len() > PLAIN_USERS_MAX {
                return Err(format!(
                    "{}: more than {PLAIN_USERS_MAX} users",
                    path.display()
                ));
            }
        }
        Ok(PlainUsers(users))
    }

    /// Constant time in the password: both sides are hashed, then compared with `ct_eq`.
    fn check(&self, user: &str, password: &str) -> bool {
        let want = self.0.get(user);
        let a = Sha256::digest(want.map(String::as_str).unwrap_or("").as_bytes());
        let b = Sha256::digest(password.as_bytes());
        want.is_some() & bool::from(a.ct_eq(&b))
    }
}

/// A salt for users nobody created, stable per user within this process (HMAC of a
/// random key), so a SCRAM exchange for an unknown user looks like any other.
fn fake_salt(user: &str) -> Vec<u8> {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    let key = KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        // Without randomness the salt is still stable per user; it only becomes guessable.
        let _ = getrandom::getrandom(&mut k);
        k
    });
    let mut m =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    m.update(user.as_bytes());
    m.finalize().into_bytes()[..16].to_vec()
}

/// SCRAM users created before the broker first starts (`osprey users create --data-dir`,
/// as Kafka's `kafka-storage.sh format --add-scram`): `<data>/controller/` this file, the
/// salted credentials only. The controller proposes them once at start-up, then deletes it.
pub const BOOTSTRAP_FILE: &str = "scram-bootstrap.json";

/// Adds (or replaces) a user's credential in the data directory's bootstrap file.
pub fn add_bootstrap_user(
    data_dir: &std::path::Path,
    user: &str,
    mechanism: Mechanism,
    password: &str,
    iterations: i32,
) -> Result<(), String> {
    if user.is_empty() || user.len() > scram::USER_NAME_MAX_BYTES {
        return Err(format!(
            "user name must be 1..={} bytes",
            scram::USER_NAME_MAX_BYTES
        ));
    }
    let dir = data_dir.join("controller");
    let mut users = read_bootstrap(&dir)?.unwrap_or_default();
    use scram::CredentialExt;
    let cred = mechanism.new_credential(password, iterations)?;
    let entry = match users.iter_mut().position(|u| u.user == user) {
        Some(i) => &mut users[i],
        None => {
            users.push(crate::cluster::state::ScramUserChange {
                user: user.to_string(),
                upserts: Vec::new(),
                deletions: Vec::new(),
            });
            users.last_mut().expect("just pushed")
        }
    };
    entry.upserts.retain(|(m, _)| m != mechanism.name());
    entry.upserts.push((mechanism.name().to_string(), cred));
    let json = serde_json::to_vec_pretty(&users).map_err(|e| e.to_string())?;
    crate::durable::write_atomic(&dir, BOOTSTRAP_FILE, &json)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join(BOOTSTRAP_FILE),
        std::fs::Permissions::from_mode(0o600),
    )
    .map_err(|e| format!("chmod {}: {e}", dir.join(BOOTSTRAP_FILE).display()))
}

/// The bootstrap users waiting in `controller_dir`, if any.
pub fn read_bootstrap(
    controller_dir: &std::path::Path,
) -> Result<Option<Vec<crate::cluster::state::ScramUserChange>>, String> {
    let path = controller_dir.join(BOOTSTRAP_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The outcome of one SaslAuthenticate token.
pub enum Outcome {
    Continue(Vec<u8>),
    Done {
        principal: String,
        reply: Vec<u8>,
    },
    /// Authentication failed; the reason is for the broker's log only.
    Failed(String),
}

/// One connection's exchange after SaslHandshake chose a mechanism.
pub enum Exchange {
    Plain,
    Scram(Box<ScramServer>),
}

impl Exchange {
    pub fn start(mechanism: &str) -> Result<Exchange, String> {
        if mechanism == PLAIN {
            return Ok(Exchange::Plain);
        }
        let m = Mechanism::from_name(mechanism).ok_or("unknown mechanism")?;
        ScramServer::new(m)
            .map(|s| Exchange::Scram(Box::new(s)))
            .map_err(|e| e.0)
    }

    pub fn mechanism(&self) -> &'static str {
        match self {
            Exchange::Plain => PLAIN,
            Exchange::Scram(s) => s.mechanism().name(),
        }
    }

    pub fn step(&mut self, token: &[u8], meta: &ClusterMeta, plain: &PlainUsers) -> Outcome {
        match self {
            Exchange::Plain => {
                // authzid NUL authcid NUL password (RFC 4616).
                let mut parts = token.split(|b| *b == 0);
                let (Some(authzid), Some(user), Some(password), None) =
                    (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Outcome::Failed("malformed PLAIN token".into());
                };
                let (Ok(authzid), Ok(user), Ok(password)) = (
                    std::str::from_utf8(authzid),
                    std::str::from_utf8(user),
                    std::str::from_utf8(password),
                ) else {
                    return Outcome::Failed("PLAIN token is not UTF-8".into());
                };
                if !authzid.is_empty() && authzid != user {
                    return Outcome::Failed(format!("authorization id differs from user {user}"));
                }
                if plain.check(user, password) {
                    Outcome::Done {
                        principal: format!("User:{user}"),
                        reply: Vec::new(),
                    }
                } else {
                    Outcome::Failed(format!("invalid credentials for user {user}"))
                }
            }
            Exchange::Scram(s) => {
                let name = s.mechanism().name();
                match s.step(
                    token,
                    |u| meta.scram.get(u).and_then(|c| c.get(name)).cloned(),
                    fake_salt,
                ) {
                    Ok(Step::Continue(b)) => Outcome::Continue(b),
                    Ok(Step::Done { user, reply }) => Outcome::Done {
                        principal: format!("User:{user}"),
                        reply,
                    },
                    Err(e) => Outcome::Failed(e.0),
                }
            }
        }
    }
}

/// Recent authentication failures per client address on one shard: each failure's
/// answer is delayed `FAILED_AUTHENTICATION_DELAY x 2^(recent failures - 1)`, at most
/// `FAILED_AUTHENTICATION_DELAY_MAX`, so guessing passwords is slow while one typo costs
/// 100 ms.
#[derive(Default)]
pub struct FailureThrottle {
    recent: RefCell<HashMap<IpAddr, (u32, Instant)>>,
}

impl FailureThrottle {
    /// Records a failure from `ip`; returns how long to hold the answer back.
    pub fn failed(&self, ip: IpAddr) -> Duration {
        let now = Instant::now();
        let mut recent = self.recent.borrow_mut();
        if recent.len() >= FAILURE_TRACKED_ADDRESSES_MAX {
            recent.retain(|_, (_, at)| now.duration_since(*at) < FAILURE_MEMORY);
            if recent.len() >= FAILURE_TRACKED_ADDRESSES_MAX
                && let Some(oldest) = recent
                    .iter()
                    .min_by_key(|(_, (_, at))| *at)
                    .map(|(k, _)| *k)
            {
                recent.remove(&oldest);
            }
        }
        let e = recent.entry(ip).or_insert((0, now));
        if now.duration_since(e.1) >= FAILURE_MEMORY {
            e.0 = 0;
        }
        e.0 = e.0.saturating_add(1);
        e.1 = now;
        let shift = (e.0 - 1).min(16);
        FAILED_AUTHENTICATION_DELAY
            .saturating_mul(1 << shift)
            .min(FAILED_AUTHENTICATION_DELAY_MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // PLAIN checks the file's users only: right password in, wrong password, unknown user,
    // another authorization id and malformed tokens out; Debug shows no password.
    #[test]
    fn plain_users() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, "# users\nalice = s3cret\nbob=pw\n").unwrap();
        let users = PlainUsers::load(&path).unwrap();
        assert!(!format!("{users:?}").contains("s3cret"));
        let meta = ClusterMeta::default();
        let run = |token: &[u8]| Exchange::Plain.step(token, &meta, &users);
        assert!(
            matches!(run(b"\0alice\0s3cret"), Outcome::Done { principal, .. } if principal == "User:alice")
        );
        assert!(matches!(run(b"alice\0alice\0s3cret"), Outcome::Done { .. }));
        assert!(matches!(run(b"\0alice\0wrong"), Outcome::Failed(_)));
        assert!(matches!(run(b"\0carol\0"), Outcome::Failed(_)));
        assert!(matches!(run(b"bob\0alice\0s3cret"), Outcome::Failed(_)));
        assert!(matches!(run(b"alice s3cret"), Outcome::Failed(_)));
    }

    // Failures from one address double the delay up to the cap; another address starts
    // at the base delay.
    #[test]
    fn failures_are_throttled_per_address() {
        let t = FailureThrottle::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(t.failed(a), FAILED_AUTHENTICATION_DELAY);
        assert_eq!(t.failed(a), FAILED_AUTHENTICATION_DELAY * 2);
        for _ in 0..20 {
            t.failed(a);
        }
        assert_eq!(t.failed(a), FAILED_AUTHENTICATION_DELAY_MAX);
        assert_eq!(t.failed(b), FAILED_AUTHENTICATION_DELAY);
    }
}
