//! Metadata (key 3): brokers (one node per shard of every host), topics and partition leaders, with
//! topic auto-creation as Kafka's auto.create.topics.enable.
//!
//! Runs on: any shard, from its own copy of the cluster metadata. Auto-creation goes to the
//! controller on shard 0. Authorized operations, when asked for, are every operation the
//! resource supports (there is no authorizer, as Kafka without one).

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::acl::resource;
use crate::controller::NewTopic;
use crate::metadata::{ClusterMeta, PartitionMeta, TopicMeta, host_of};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, acl, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::Metadata,
    min_version: 0,
    max_version: 12,
};

/// Every node of every registered host, with the host's rack and its endpoint on the
/// listener `listener` (the one the client connected through): what Metadata and
/// DescribeCluster list.
pub fn brokers(shard: &Shard, listener: &str) -> Vec<MetadataResponseBroker> {
    shard
        .meta()
        .nodes_on(listener)
        .into_iter()
        .map(|(id, host, port, rack)| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(str_bytes(host))
                .with_port(port as i32)
                .with_rack(Some(str_bytes(rack)))
        })
        .collect()
}

/// The controller id clients see: as in KRaft, where clients cannot reach the controller
/// quorum, a broker node that forwards admin requests to it (shard 0 of this host).
pub fn controller_id(shard: &Shard) -> BrokerId {
    BrokerId(crate::metadata::node_id(shard.config.node_id, 0))
}

/// One partition as clients see it: (error code, leader, offline replicas). A host cut
/// off from the quorum does not claim replicated leaderships: clients ask another host,
/// which knows the new leader. No live in-sync replica to lead is LEADER_NOT_AVAILABLE:
/// clients wait and retry, as with Kafka. Metadata and DescribeTopicPartitions share it.
pub fn partition_view(
    meta: &ClusterMeta,
    pm: &PartitionMeta,
    isolated_host: Option<u32>,
) -> (i16, i32, Vec<BrokerId>) {
    let offline = pm
        .replicas
        .iter()
        .copied()
        .filter(|r| !meta.is_live(*r))
        .map(BrokerId)
        .collect();
    let leader = if isolated_host == Some(host_of(pm.leader)) && pm.replicas.len() > 1 {
        -1
    } else {
        pm.leader
    };
    let code = if leader < 0 {
        error::LEADER_NOT_AVAILABLE
    } else {
        error::NONE
    };
    (code, leader, offline)
}

/// Node ids as the wire has them.
pub fn broker_ids(v: &[i32]) -> Vec<BrokerId> {
    v.iter().map(|r| BrokerId(*r)).collect()
}

fn topic_response(
    meta: &ClusterMeta,
    t: &TopicMeta,
    authorized_operations: i32,
    isolated_host: Option<u32>,
) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(p, pm)| {
            let (code, leader, offline) = partition_view(meta, pm, isolated_host);
            MetadataResponsePartition::default()
                .with_error_code(code)
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(leader))
                // The real epoch: librdkafka sends it back in Fetch (0 when told -1, which
                // a later epoch would fence) and validates positions with
                // OffsetForLeaderEpoch after a leader change (KIP-320).
                .with_leader_epoch(pm.leader_epoch)
                .with_replica_nodes(broker_ids(&pm.replicas))
                .with_isr_nodes(broker_ids(&pm.isr))
                .with_offline_replicas(offline)
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(error::NONE)
        .with_name(Some(TopicName(str_bytes(t.name.clone()))))
        .with_topic_id(uuid(t.id))
        .with_is_internal(crate::internal_topic::is_internal(&t.name))
        .with_partitions(partitions)
        .with_topic_authorized_operations(authorized_operations)
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: MetadataRequest = req.decode()?;
    let isolated_host = shard.isolated().then_some(shard.config.node_id);
    // v0: an empty list means all topics; v1+: null means all, empty means none.
    let requested: Option<Vec<String>> = match body.topics {
        None => None,
        Some(t) if t.is_empty() && req.version == 0 => None,
        Some(t) => Some(
            t.into_iter()
                .filter_map(|t| {
                    t.name.map(|n| n.0.to_string()).or_else(|| {
                        shard
                            .meta()
                            .topic_by_id(t.topic_id.as_bytes())
                            .map(|m| m.name.clone())
                    })
                })
                .collect(),
        ),
    };
    // v4+ carries the client's wish; older versions always allowed auto-creation.
    let allow_auto_create =
        (req.version < 4 || body.allow_auto_topic_creation) && shard.config.auto_create_topics;
    let mut meta = shard.meta();
    if let Some(names) = &requested {
        let missing: Vec<String> = names
            .iter()
            .filter(|n| meta.topic(n).is_none())
            .cloned()
            .collect();
        if allow_auto_create && !missing.is_empty() {
            // Auto-creation needs CREATE on the cluster or on the topic (and DESCRIBE to
            // see it), as Kafka.
            let may_create_any = session.may_cluster(shard, op::CREATE);
            let new_topics: Vec<NewTopic> = missing
                .iter()
                .filter(|n| crate::topic_config::validate_topic_name(n).is_ok())
                .filter(|n| !crate::internal_topic::is_internal(n))
                .filter(|n| may_create_any || session.may(shard, op::CREATE, resource::TOPIC, n))
                .map(|n| NewTopic {
                    name: n.clone(),
                    num_partitions: -1,
                    replication_factor: -1,
                    configs: Default::default(),
                })
                .collect();
            if !new_topics.is_empty() {
                let created = shard
                    .call(0, move |s| async move {
                        let results = s.controller().create_topics(&s, new_topics, false).await;
                        results.into_iter().filter(|r| r.is_ok()).count()
                    })
                    .await;
                if let Ok(n) = created
                    && n > 0
                {
                    log::info!("auto-created {n} topics for a Metadata request");
                }
                meta = shard.meta();
            }
        }
    }
    // v8+ may ask for them; the cluster's moved to DescribeCluster in v11 (the field is gone).
    // Each the principal's own (Kafka's AuthHelper.authorizedOperations); the cluster's
    // only with DESCRIBE on it (0 otherwise), as Kafka.
    let topic_ops = |name: &str| {
        if body.include_topic_authorized_operations {
            session.authorized_ops(shard, resource::TOPIC, name, acl::TOPIC)
        } else {
            acl::OMITTED
        }
    };
    let cluster_ops = cluster_authorized_ops(
        shard,
        session,
        (8..=10).contains(&req.version) && body.include_cluster_authorized_operations,
    );
    let topics: Vec<MetadataResponseTopic> = match &requested {
        // All topics: only those the principal may describe (the rest are hidden).
        None => meta
            .topics
            .values()
            .filter(|t| session.may(shard, op::DESCRIBE, resource::TOPIC, &t.name))
            .map(|t| topic_response(&meta, t, topic_ops(&t.name), isolated_host))
            .collect(),
        Some(names) => names
            .iter()
            .map(|n| match meta.topic(n) {
                _ if !session.may(shard, op::DESCRIBE, resource::TOPIC, n) => {
                    MetadataResponseTopic::default()
                        .with_error_code(error::TOPIC_AUTHORIZATION_FAILED)
                        .with_name(Some(TopicName(str_bytes(n.clone()))))
                        .with_topic_authorized_operations(acl::OMITTED)
                }
                Some(t) => topic_response(&meta, t, topic_ops(n), isolated_host),
                None => {
                    let code = if crate::topic_config::validate_topic_name(n).is_err() {
                        error::INVALID_TOPIC_EXCEPTION
                    } else {
                        error::UNKNOWN_TOPIC_OR_PARTITION
                    };
                    MetadataResponseTopic::default()
                        .with_error_code(code)
                        .with_name(Some(TopicName(str_bytes(n.clone()))))
                        .with_topic_authorized_operations(acl::OMITTED)
                }
            })
            .collect(),
    };
    let resp = MetadataResponse::default()
        .with_brokers(brokers(shard, &session.listener_name))
        .with_cluster_id(Some(str_bytes(meta.cluster_id.clone())))
        .with_controller_id(controller_id(shard))
        .with_topics(topics)
        .with_cluster_authorized_operations(cluster_ops);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// The cluster's authorized operations when `requested` (Metadata v8-10, DescribeCluster):
/// the principal's own if it may DESCRIBE the cluster, else 0, as Kafka.
pub fn cluster_authorized_ops(shard: &Shard, session: &Session, requested: bool) -> i32 {
    if !requested {
        acl::OMITTED
    } else if session.may_cluster(shard, op::DESCRIBE) {
        session.authorized_ops(
            shard,
            resource::CLUSTER,
            crate::acl::CLUSTER_NAME,
            acl::CLUSTER,
        )
    } else {
        0
    }
}
