//! DescribeUserScramCredentials (key 50): which SCRAM mechanisms (and iterations) each user
//! has; never salts or keys.
//!
//! Runs on: any shard, from its own copy of the metadata.

use std::rc::Rc;

use kafka_protocol::messages::describe_user_scram_credentials_response::{
    CredentialInfo, DescribeUserScramCredentialsResult,
};
use kafka_protocol::messages::{
    ApiKey, DescribeUserScramCredentialsRequest, DescribeUserScramCredentialsResponse,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::sasl::scram::Mechanism;
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeUserScramCredentials,
    min_version: 0,
    max_version: 0,
};

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeUserScramCredentialsRequest = req.decode()?;
    if !session.may_cluster(shard, crate::protocol::acl::op::DESCRIBE) {
        let resp = DescribeUserScramCredentialsResponse::default()
            .with_error_code(error::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let meta = shard.meta();
    let names: Vec<String> = match &body.users {
        Some(u) if !u.is_empty() => u.iter().map(|n| n.name.to_string()).collect(),
        _ => meta.scram.keys().cloned().collect(),
    };
    let results = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let r =
                DescribeUserScramCredentialsResult::default().with_user(str_bytes(name.clone()));
            if names[..i].contains(name) {
                return r
                    .with_error_code(error::DUPLICATE_RESOURCE)
                    .with_error_message(Some(str_bytes("Cannot describe the same user twice")));
            }
            match meta.scram.get(name) {
                None => r
                    .with_error_code(error::RESOURCE_NOT_FOUND)
                    .with_error_message(Some(str_bytes(
                        "Attempt to describe a user credential that does not exist",
                    ))),
                Some(creds) => r.with_error_code(error::NONE).with_credential_infos(
                    creds
                        .iter()
                        .filter_map(|(m, c)| {
                            Mechanism::from_name(m).map(|m| {
                                CredentialInfo::default()
                                    .with_mechanism(m.kafka_type())
                                    .with_iterations(c.iterations)
                            })
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    let resp = DescribeUserScramCredentialsResponse::default()
        .with_error_code(error::NONE)
        .with_results(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
