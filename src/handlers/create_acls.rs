//! CreateAcls (key 30): adds ACL bindings through the controller quorum
//! (`MetaCommand::CreateAcls`), so every shard of every host authorizes from them.
//!
//! Runs on: any shard; proposed from shard 0. Needs ALTER on the cluster. Without
//! `--authorizer` every creation answers SECURITY_DISABLED, as Kafka without one.

use std::rc::Rc;

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{ApiKey, CreateAclsRequest, CreateAclsResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl;
use crate::metadata::AclBinding;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreateAcls,
    min_version: 1,
    max_version: 3,
};

/// ACL bindings the cluster holds at most.
pub const ACLS_MAX: usize = 100_000;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: CreateAclsRequest = req.decode()?;
    let refuse = |code: i16, m: &str| {
        AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(m)))
    };
    let mut results: Vec<Option<AclCreationResult>> = Vec::new();
    let mut valid = Vec::new();
    let room = ACLS_MAX.saturating_sub(shard.meta().acls.len());
    for c in &body.creations {
        let b = AclBinding {
            resource_type: c.resource_type,
            resource_name: c.resource_name.to_string(),
            pattern_type: c.resource_pattern_type,
            principal: c.principal.to_string(),
            host: c.host.to_string(),
            operation: c.operation,
            permission_type: c.permission_type,
        };
        let r = if shard.config.authorizer.is_none() {
            Some(refuse(
                error::SECURITY_DISABLED,
                "No Authorizer is configured.",
            ))
        } else if !session.may_cluster(shard, op::ALTER) {
            Some(refuse(
                error::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.",
            ))
        } else if let Some(why) = acl::invalid_binding(&b) {
            Some(refuse(error::INVALID_REQUEST, why))
        } else if valid.len() >= room {
            Some(refuse(error::INVALID_REQUEST, "too many ACLs"))
        } else {
            valid.push(b);
            None
        };
        results.push(r);
    }
    let outcome = if valid.is_empty() {
        Ok(())
    } else {
        shard
            .call(0, move |s| async move {
                s.controller().alter_acls(true, valid).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(crate::controller::TopicError::new(
                    error::REQUEST_TIMED_OUT,
                    "the controller did not answer",
                ))
            })
    };
    let results = results
        .into_iter()
        .map(|r| match (r, &outcome) {
            (Some(r), _) => r,
            (None, Ok(())) => AclCreationResult::default().with_error_code(error::NONE),
            (None, Err(e)) => refuse(e.code, &e.message),
        })
        .collect();
    let resp = CreateAclsResponse::default().with_results(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
