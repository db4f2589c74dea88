//! DescribeAcls (key 29): the ACL bindings matching a filter, grouped by resource.
//!
//! Runs on: any shard, from its own copy of the metadata. Needs DESCRIBE on the cluster.
//! Without `--authorizer` it answers SECURITY_DISABLED, as Kafka without one.

use std::rc::Rc;

use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{ApiKey, DescribeAclsRequest, DescribeAclsResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::AclFilter;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeAcls,
    min_version: 1,
    max_version: 3,
};

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let b: DescribeAclsRequest = req.decode()?;
    let mut resp = DescribeAclsResponse::default();
    if shard.config.authorizer.is_none() {
        resp = resp
            .with_error_code(error::SECURITY_DISABLED)
            .with_error_message(Some(str_bytes("No Authorizer is configured.")));
    } else if !session.may_cluster(shard, op::DESCRIBE) {
        resp = resp
            .with_error_code(error::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
    } else {
        let filter = AclFilter {
            resource_type: b.resource_type_filter,
            resource_name: b.resource_name_filter.map(|s| s.to_string()),
            pattern_type: b.pattern_type_filter,
            principal: b.principal_filter.map(|s| s.to_string()),
            host: b.host_filter.map(|s| s.to_string()),
            operation: b.operation,
            permission_type: b.permission_type,
        };
        let meta = shard.meta();
        let mut resources: Vec<DescribeAclsResource> = Vec::new();
        for a in meta.acls.iter().filter(|a| filter.matches(a)) {
            let d = AclDescription::default()
                .with_principal(str_bytes(a.principal.clone()))
                .with_host(str_bytes(a.host.clone()))
                .with_operation(a.operation)
                .with_permission_type(a.permission_type);
            match resources.iter_mut().find(|r| {
                r.resource_type == a.resource_type
                    && r.pattern_type == a.pattern_type
                    && r.resource_name.as_str() == a.resource_name
            }) {
                Some(r) => r.acls.push(d),
                None => resources.push(
                    DescribeAclsResource::default()
                        .with_resource_type(a.resource_type)
                        .with_resource_name(str_bytes(a.resource_name.clone()))
                        .with_pattern_type(a.pattern_type)
                        .with_acls(vec![d]),
                ),
            }
        }
        resp = resp.with_error_code(error::NONE).with_resources(resources);
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
