//! DescribeCluster (key 60): the cluster id, the controller and the broker nodes (one per
//! shard, as Metadata lists them), with the cluster's authorized operations when asked.
//!
//! Runs on: any shard, from its own node list. As Kafka, answering needs no permission;
//! the cluster's authorized operations are the principal's own with DESCRIBE on the
//! cluster, 0 without (every supported one when no authorizer runs).
//! Only the brokers endpoint type (1) is served; asking for controllers (2) answers
//! UNSUPPORTED_ENDPOINT_TYPE as a Kafka broker does.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::metadata::{brokers, cluster_authorized_ops, controller_id};
use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, acl, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeCluster,
    min_version: 0,
    max_version: 2,
};
/// endpoint_type (v1+): brokers.
const ENDPOINT_BROKERS: i8 = 1;

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeClusterRequest = req.decode()?;
    let mut resp = DescribeClusterResponse::default()
        .with_endpoint_type(ENDPOINT_BROKERS)
        .with_cluster_id(str_bytes(shard.meta().cluster_id.clone()))
        .with_controller_id(controller_id(shard))
        .with_cluster_authorized_operations(cluster_authorized_ops(
            shard,
            session,
            body.include_cluster_authorized_operations,
        ));
    if req.version >= 1 && body.endpoint_type != ENDPOINT_BROKERS {
        resp = resp
            .with_error_code(error::UNSUPPORTED_ENDPOINT_TYPE)
            .with_error_message(Some(str_bytes(format!(
                "endpoint type {} is not served; only brokers (1)",
                body.endpoint_type
            ))))
            .with_controller_id(BrokerId(-1))
            .with_cluster_authorized_operations(acl::OMITTED);
    } else {
        resp.brokers = brokers(shard, &session.listener_name)
            .into_iter()
            .map(|b| {
                DescribeClusterBroker::default()
                    .with_broker_id(b.node_id)
                    .with_host(b.host)
                    .with_port(b.port)
                    .with_rack(b.rack)
            })
            .collect();
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
