//! DescribeQuorum (key 55): the metadata quorum as `kafka-metadata-quorum.sh describe
//! --status/--replication` and the admin clients show it: the Raft leader and term, the
//! committed end of the metadata log (high watermark), each voter's replicated log end and
//! last contact, the hosts that are not voters as observers, and (v2) the voters'
//! controller endpoints (none for a one-host cluster, whose controller has no listener).
//!
//! Runs on: any shard; shard 0 asks its controller thread, which answers from its Raft
//! metrics when it leads the quorum, else asks the leader over the controller wire (Kafka
//! brokers forward it to the active controller the same way). The quorum is the partition
//! `__cluster_metadata`-0 as in KRaft; its offsets are Raft log positions. Needs DESCRIBE on
//! the cluster (CLUSTER_AUTHORIZATION_FAILED at the top).

use std::rc::Rc;

use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{
    ApiKey, BrokerId, DescribeQuorumRequest, DescribeQuorumResponse, TopicName,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::cluster::{QuorumInfo, ReplicaInfo};
use crate::protocol::{ProtocolError, RequestFrame, acl::op, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeQuorum,
    min_version: 0,
    max_version: 2,
};

/// KRaft's name for the metadata log's topic (one partition, 0).
pub const METADATA_TOPIC: &str = "__cluster_metadata";
/// Listener name the voters' endpoints are given under (Kafka's usual controller listener).
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeQuorumRequest = req.decode()?;
    let top = |code: i16, message: String| -> Result<Reply, ProtocolError> {
        let resp = DescribeQuorumResponse::default()
            .with_error_code(code)
            .with_error_message(Some(str_bytes(message)));
        Ok(Reply::Frame(respond(shard, &req, &resp)?))
    };
    if !session.may_cluster(shard, op::DESCRIBE) {
        return top(
            error::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.".into(),
        );
    }
    let asks_metadata = body.topics.len() == 1
        && body.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && body.topics[0].partitions.len() == 1
        && body.topics[0].partitions[0].partition_index == 0;
    if !asks_metadata {
        // Kafka answers every partition asked with UNKNOWN_TOPIC_OR_PARTITION.
        let topics = body
            .topics
            .iter()
            .map(|t| {
                TopicData::default()
                    .with_topic_name(t.topic_name.clone())
                    .with_partitions(
                        t.partitions
                            .iter()
                            .map(|p| {
                                PartitionData::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error::UNKNOWN_TOPIC_OR_PARTITION)
                                    .with_leader_id(BrokerId(-1))
                                    .with_leader_epoch(-1)
                                    .with_high_watermark(-1)
                            })
                            .collect(),
                    )
            })
            .collect();
        let resp = DescribeQuorumResponse::default().with_topics(topics);
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    let info = shard
        .call(0, |s| async move { s.controller().describe_quorum().await })
        .await;
    let info = match info {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            log::debug!("describe quorum: {e}");
            return partition_error(shard, &req, error::NOT_LEADER_OR_FOLLOWER);
        }
        Err(e) => return top(error::UNKNOWN_SERVER_ERROR, format!("shard 0: {e}")),
    };
    let resp = answer(&info);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

fn partition_error(shard: &Shard, req: &RequestFrame, code: i16) -> Result<Reply, ProtocolError> {
    let resp = DescribeQuorumResponse::default().with_topics(vec![
        TopicData::default()
            .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
            .with_partitions(vec![
                PartitionData::default()
                    .with_error_code(code)
                    .with_leader_id(BrokerId(-1))
                    .with_leader_epoch(-1)
                    .with_high_watermark(-1),
            ]),
    ]);
    Ok(Reply::Frame(respond(shard, req, &resp)?))
}

fn replica(r: &ReplicaInfo) -> ReplicaState {
    ReplicaState::default()
        .with_replica_id(BrokerId(r.id as i32))
        .with_log_end_offset(r.log_end_offset)
        .with_last_fetch_timestamp(r.last_contact_ms)
        .with_last_caught_up_timestamp(r.last_caught_up_ms)
}

/// The response for the quorum `info` describes (fields of older versions are dropped by
/// the encoder).
pub fn answer(info: &QuorumInfo) -> DescribeQuorumResponse {
    let partition = PartitionData::default()
        .with_partition_index(0)
        .with_error_code(error::NONE)
        .with_error_message(None)
        .with_leader_id(BrokerId(info.leader_id as i32))
        .with_leader_epoch(info.leader_epoch.min(i32::MAX as u64) as i32)
        .with_high_watermark(info.high_watermark)
        .with_current_voters(info.voters.iter().map(replica).collect())
        .with_observers(info.observers.iter().map(replica).collect());
    let nodes = info
        .voter_addrs
        .iter()
        .filter_map(|(id, addr)| {
            let (host, port) = addr.rsplit_once(':')?;
            let port: u16 = port.parse().ok()?;
            Some(
                Node::default()
                    .with_node_id(BrokerId(*id as i32))
                    .with_listeners(vec![
                        Listener::default()
                            .with_name(str_bytes(CONTROLLER_LISTENER))
                            .with_host(str_bytes(host.trim_matches(['[', ']'])))
                            .with_port(port),
                    ]),
            )
        })
        .collect();
    DescribeQuorumResponse::default()
        .with_error_code(error::NONE)
        .with_error_message(None)
        .with_topics(vec![
            TopicData::default()
                .with_topic_name(TopicName(str_bytes(METADATA_TOPIC)))
                .with_partitions(vec![partition]),
        ])
        .with_nodes(nodes)
}
