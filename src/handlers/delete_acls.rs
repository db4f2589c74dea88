//! DeleteAcls (key 31): removes the ACL bindings matching each filter, through the
//! controller quorum (`MetaCommand::DeleteAcls` with the bindings matched here), and
//! answers what each filter matched.
//!
//! Runs on: any shard; proposed from shard 0. Needs ALTER on the cluster. Without
//! `--authorizer` it answers SECURITY_DISABLED, as Kafka without one.

use std::rc::Rc;

use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{ApiKey, DeleteAclsRequest, DeleteAclsResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::AclFilter;
use crate::metadata::AclBinding;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteAcls,
    min_version: 1,
    max_version: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DeleteAclsRequest = req.decode()?;
    let refused = if shard.config.authorizer.is_none() {
        Some((error::SECURITY_DISABLED, "No Authorizer is configured."))
    } else if !session.may_cluster(shard, op::ALTER) {
        Some((
            error::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        ))
    } else {
        None
    };
    if let Some((code, m)) = refused {
        let results = body
            .filters
            .iter()
            .map(|_| {
                DeleteAclsFilterResult::default()
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(m)))
            })
            .collect();
        let resp = DeleteAclsResponse::default().with_filter_results(results);
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let meta = shard.meta();
    let matched: Vec<Vec<AclBinding>> = body
        .filters
        .iter()
        .map(|f| {
            let filter = AclFilter {
                resource_type: f.resource_type_filter,
                resource_name: f.resource_name_filter.as_ref().map(|s| s.to_string()),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.as_ref().map(|s| s.to_string()),
                host: f.host_filter.as_ref().map(|s| s.to_string()),
                operation: f.operation,
                permission_type: f.permission_type,
            };
            meta.acls
                .iter()
                .filter(|a| filter.matches(a))
                .cloned()
                .collect()
        })
        .collect();
    let all: Vec<AclBinding> = matched.iter().flatten().cloned().collect();
    let outcome = if all.is_empty() {
        Ok(())
    } else {
        shard
            .call(0, move |s| async move {
                s.controller().alter_acls(false, all).await
            })
            .await
            .unwrap_or_else(|_| {
                Err(crate::controller::TopicError::new(
                    error::REQUEST_TIMED_OUT,
                    "the controller did not answer",
                ))
            })
    };
    let results = matched
        .into_iter()
        .map(|acls| match &outcome {
            Err(e) => DeleteAclsFilterResult::default()
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(e.message.clone()))),
            Ok(()) => DeleteAclsFilterResult::default()
                .with_error_code(error::NONE)
                .with_matching_acls(
                    acls.into_iter()
                        .map(|a| {
                            DeleteAclsMatchingAcl::default()
                                .with_error_code(error::NONE)
                                .with_resource_type(a.resource_type)
                                .with_resource_name(str_bytes(a.resource_name))
                                .with_pattern_type(a.pattern_type)
                                .with_principal(str_bytes(a.principal))
                                .with_host(str_bytes(a.host))
                                .with_operation(a.operation)
                                .with_permission_type(a.permission_type)
                        })
                        .collect(),
                ),
        })
        .collect();
    let resp = DeleteAclsResponse::default().with_filter_results(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
