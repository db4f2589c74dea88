//! AlterPartitionReassignments (key 45): move partitions' replicas to other nodes
//! (`kafka-reassign-partitions.sh --execute`, the admin clients'
//! `alter_partition_reassignments`), or cancel an ongoing move (null replicas).
//!
//! Runs on: any shard; shard 0 proposes `MetaCommand::AlterReassignments` to the controller
//! quorum and answers once it is committed. The move itself happens as the metadata
//! spreads: new replicas open their partition and fetch from the leader, the leader adds
//! them to the ISR when they catch up, and the controller then drops the old replicas
//! (moving leadership onto the target if needed; their hosts delete the files).
//! Needs ALTER on the cluster (CLUSTER_AUTHORIZATION_FAILED at the top).

use std::rc::Rc;

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::cluster::state::ReassignChange;
use crate::protocol::{ProtocolError, RequestFrame, acl::op, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AlterPartitionReassignments,
    min_version: 0,
    max_version: 1,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: AlterPartitionReassignmentsRequest = req.decode()?;
    // v0 has no allow_replication_factor_change: any change is allowed.
    let allow_rf_change = req.version == 0 || body.allow_replication_factor_change;
    let changes: Vec<ReassignChange> = body
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| ReassignChange {
                topic: t.name.0.to_string(),
                partition: p.partition_index,
                target: p
                    .replicas
                    .as_ref()
                    .map(|rs| rs.iter().map(|r| r.0).collect()),
                allow_rf_change,
            })
        })
        .collect();
    if !session.may_cluster(shard, op::ALTER) {
        let resp = AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(allow_rf_change)
            .with_error_code(error::CLUSTER_AUTHORIZATION_FAILED)
            .with_error_message(Some(str_bytes("Cluster authorization failed.")));
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let n = changes.len();
    let results: Vec<(i16, Option<String>)> = match shard
        .call(0, move |s| async move {
            s.controller().alter_reassignments(changes).await
        })
        .await
    {
        Ok(rs) => rs
            .into_iter()
            .map(|r| match r {
                Ok(()) => (error::NONE, None),
                Err(e) => (e.code, Some(e.message)),
            })
            .collect(),
        Err(e) => vec![(error::NOT_CONTROLLER, Some(format!("shard 0: {e}"))); n],
    };
    let mut results = results.into_iter();
    let responses = body
        .topics
        .iter()
        .map(|t| {
            ReassignableTopicResponse::default()
                .with_name(t.name.clone())
                .with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let (code, message) = results
                                .next()
                                .unwrap_or((error::UNKNOWN_SERVER_ERROR, None));
                            ReassignablePartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code)
                                .with_error_message(message.map(str_bytes))
                        })
                        .collect(),
                )
        })
        .collect();
    let resp = AlterPartitionReassignmentsResponse::default()
        .with_allow_replication_factor_change(allow_rf_change)
        .with_error_code(error::NONE)
        .with_error_message(None)
        .with_responses(responses);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
