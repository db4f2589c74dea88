//! AlterUserScramCredentials (key 51): set or delete users' SCRAM credentials. The client
//! sends the salted password (never the password); the broker keeps StoredKey and
//! ServerKey (`sasl::scram`). Changes go through the controller quorum
//! (`MetaCommand::AlterScramCredentials`), so every host and shard authenticates from its
//! own copy of the metadata.
//!
//! Runs on: any shard; the change is proposed from shard 0. One result per user: a user
//! with any invalid change (unknown mechanism, iterations out of range, a mechanism named
//! twice) gets that error and nothing of it is applied.

use std::rc::Rc;

use kafka_protocol::messages::alter_user_scram_credentials_response::AlterUserScramCredentialsResult;
use kafka_protocol::messages::{
    AlterUserScramCredentialsRequest, AlterUserScramCredentialsResponse, ApiKey,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::cluster::state::ScramUserChange;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::sasl::scram::{self, CredentialExt, Mechanism};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AlterUserScramCredentials,
    min_version: 0,
    max_version: 0,
};

/// Users one request may change.
pub const USERS_PER_REQUEST_MAX: usize = 1000;

/// A change's mechanism and credential (none: a deletion), or the error it gets.
type Check = Result<(String, Option<crate::metadata::ScramCredential>), (i16, String)>;

struct Pending {
    change: ScramUserChange,
    error: Option<(i16, String)>,
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: AlterUserScramCredentialsRequest = req.decode()?;
    let allowed = session.may_cluster(shard, crate::protocol::acl::op::ALTER);
    let mut users: Vec<Pending> = Vec::new();
    let mut entry = |name: &str| -> usize {
        match users.iter().position(|u| u.change.user == name) {
            Some(i) => i,
            None => {
                users.push(Pending {
                    change: ScramUserChange {
                        user: name.to_string(),
                        upserts: Vec::new(),
                        deletions: Vec::new(),
                    },
                    error: None,
                });
                users.len() - 1
            }
        }
    };
    let mut named: Vec<(usize, i8)> = Vec::new();
    let mut checks: Vec<(usize, Check)> = Vec::new();
    for d in &body.deletions {
        let i = entry(d.name.as_str());
        named.push((i, d.mechanism));
        checks.push((
            i,
            match Mechanism::from_kafka_type(d.mechanism) {
                Some(m) => Ok((m.name().to_string(), None)),
                None => Err((
                    error::UNSUPPORTED_SASL_MECHANISM,
                    "Unknown SCRAM mechanism".into(),
                )),
            },
        ));
    }
    for u in &body.upsertions {
        let i = entry(u.name.as_str());
        named.push((i, u.mechanism));
        let r = match Mechanism::from_kafka_type(u.mechanism) {
            None => Err((
                error::UNSUPPORTED_SASL_MECHANISM,
                "Unknown SCRAM mechanism".into(),
            )),
            Some(_) if u.iterations < scram::ITERATIONS_MIN => Err((
                error::UNACCEPTABLE_CREDENTIAL,
                format!("Too few iterations (at least {})", scram::ITERATIONS_MIN),
            )),
            Some(_) if u.iterations > scram::ITERATIONS_MAX => Err((
                error::UNACCEPTABLE_CREDENTIAL,
                format!("Too many iterations (at most {})", scram::ITERATIONS_MAX),
            )),
            Some(m) if u.salted_password.len() != m.digest_bytes() || u.salt.is_empty() => Err((
                error::UNACCEPTABLE_CREDENTIAL,
                "Salt empty or salted password of the wrong length".into(),
            )),
            Some(m) => Ok((
                m.name().to_string(),
                Some(m.credential(&u.salted_password, &u.salt, u.iterations)),
            )),
        };
        checks.push((i, r));
    }
    for (i, r) in checks {
        let user = &mut users[i];
        if user.change.user.is_empty() || user.change.user.len() > scram::USER_NAME_MAX_BYTES {
            user.error = Some((
                error::UNACCEPTABLE_CREDENTIAL,
                "Username must not be empty or longer than 256 bytes".into(),
            ));
        }
        match r {
            Err(e) => user.error = user.error.take().or(Some(e)),
            Ok((m, Some(c))) => user.change.upserts.push((m, c)),
            Ok((m, None)) => user.change.deletions.push(m),
        }
    }
    // A mechanism named twice for one user (upsert and delete, or two upserts).
    for (k, (i, m)) in named.iter().enumerate() {
        if named[..k].contains(&(*i, *m)) && users[*i].error.is_none() {
            users[*i].error = Some((
                error::DUPLICATE_RESOURCE,
                "A user credential cannot be altered twice in the same request".into(),
            ));
        }
    }
    if users.len() > USERS_PER_REQUEST_MAX {
        for u in &mut users {
            u.error = Some((
                error::INVALID_REQUEST,
                format!("at most {USERS_PER_REQUEST_MAX} users per request"),
            ));
        }
    }
    if !allowed {
        for u in &mut users {
            u.error = Some((
                error::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.".into(),
            ));
        }
    }
    let valid: Vec<ScramUserChange> = users
        .iter()
        .filter(|u| u.error.is_none())
        .map(|u| u.change.clone())
        .collect();
    let mut applied = if valid.is_empty() {
        Vec::new()
    } else {
        shard
            .call(0, move |s| async move {
                s.controller().alter_scram(valid).await
            })
            .await
            .unwrap_or_default()
    }
    .into_iter();
    let results = users
        .into_iter()
        .map(|u| {
            let outcome = match u.error {
                Some(e) => Err(e),
                None => match applied.next() {
                    Some(Ok(())) => Ok(()),
                    Some(Err(e)) => Err((e.code, e.message)),
                    None => Err((
                        error::REQUEST_TIMED_OUT,
                        "the controller did not answer".into(),
                    )),
                },
            };
            let r = AlterUserScramCredentialsResult::default().with_user(str_bytes(u.change.user));
            match outcome {
                Ok(()) => r.with_error_code(error::NONE),
                Err((code, message)) => r
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    let resp = AlterUserScramCredentialsResponse::default().with_results(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
