//! Admin requests of the client, as Kafka's AdminClient sends them: DescribeCluster,
//! ListGroups (per node), DescribeGroups, DeleteGroups and OffsetDelete (at the group's
//! coordinator), DescribeConfigs and IncrementalAlterConfigs of topics, CreatePartitions (at
//! the controller), DescribeLogDirs (per node) and InitProducerId. Runs on the `Client`'s
//! executor; no borrow is held across an await.

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, CreatePartitionsRequest, DeleteGroupsRequest,
    DescribeClusterRequest, DescribeConfigsRequest, DescribeGroupsRequest, DescribeLogDirsRequest,
    GroupId, IncrementalAlterConfigsRequest, InitProducerIdRequest, ListGroupsRequest,
    MetadataRequest, OffsetDeleteRequest, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::error::check_code;
use super::{Client, ClientError, Result};

// Version caps: the highest versions whose fields this client fills or reads.
const DESCRIBE_CLUSTER_VERSION_CAP: i16 = 1;
const LIST_GROUPS_VERSION_CAP: i16 = 4;
const DESCRIBE_GROUPS_VERSION_CAP: i16 = 5;
/// Kafka's GROUP_ID_NOT_FOUND (DescribeGroups v6+ for a group that is not a classic one).
const GROUP_ID_NOT_FOUND: i16 = 69;
const DELETE_GROUPS_VERSION_CAP: i16 = 2;
const OFFSET_DELETE_VERSION_CAP: i16 = 0;
const DESCRIBE_CONFIGS_VERSION_CAP: i16 = 4;
const INCREMENTAL_ALTER_CONFIGS_VERSION_CAP: i16 = 1;
const CREATE_PARTITIONS_VERSION_CAP: i16 = 3;
const DESCRIBE_LOG_DIRS_VERSION_CAP: i16 = 4;
const INIT_PRODUCER_ID_VERSION_CAP: i16 = 4;

/// The config resource type of a topic (DescribeConfigs, IncrementalAlterConfigs).
const RESOURCE_TOPIC: i8 = 2;

/// A broker node as DescribeCluster (or Metadata) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
    /// Rack, if the broker has one.
    pub rack: Option<String>,
    /// Fenced by the controller (DescribeCluster v2 lists them only on request).
    pub fenced: bool,
}

/// The answer to DescribeCluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id.
    pub cluster_id: String,
    /// Controller node id (-1: none known).
    pub controller_id: i32,
    /// Nodes, sorted by id.
    pub nodes: Vec<NodeInfo>,
}

/// One group from ListGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// Group id.
    pub group_id: String,
    /// Protocol type ("consumer" for consumer groups, "" for offsets-only groups).
    pub protocol_type: String,
    /// State (v4+; empty when the broker does not say).
    pub state: String,
    /// The node that answered (the group's coordinator).
    pub coordinator: i32,
}

/// A member from DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// Member id.
    pub member_id: String,
    /// Static member id, if any.
    pub instance_id: Option<String>,
    /// The member's client id.
    pub client_id: String,
    /// The member's host as the coordinator saw it.
    pub client_host: String,
    /// The member's assignment bytes (a ConsumerProtocolAssignment for classic consumer
    /// groups; empty for KIP-848 groups).
    pub assignment: Bytes,
    /// The assigned partitions by topic name, for consumer-protocol (KIP-848) groups, from
    /// ConsumerGroupDescribe; `None` for classic groups (see `assignment`).
    pub partitions: Option<std::collections::BTreeMap<String, Vec<i32>>>,
}

/// A group from DescribeGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Group id.
    pub group_id: String,
    /// State: Empty, PreparingRebalance, CompletingRebalance, Stable, Dead.
    pub state: String,
    /// Protocol type ("consumer").
    pub protocol_type: String,
    /// The chosen protocol (the assignor, e.g. "range").
    pub protocol: String,
    /// Members.
    pub members: Vec<MemberDescription>,
    /// The coordinator node.
    pub coordinator: i32,
}

/// One config of a resource from DescribeConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    /// Config name (Kafka's, e.g. retention.ms).
    pub name: String,
    /// Value (None when sensitive or unset).
    pub value: Option<String>,
    /// Kafka's ConfigSource code (1 topic, 4 static broker, 5 default, ...).
    pub source: i8,
    /// Read-only.
    pub read_only: bool,
    /// Sensitive (value hidden).
    pub sensitive: bool,
}

/// Kafka's name of a ConfigSource code.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}

/// One change of IncrementalAlterConfigs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigChange {
    /// Set `name` to `value`.
    Set(String, String),
    /// Remove `name` (back to its default).
    Delete(String),
}

/// A replica's size from DescribeLogDirs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSize {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Bytes on disk.
    pub size_bytes: i64,
}

/// A per-partition outcome (OffsetDelete).
pub type PartitionOutcome = (String, i32, Result<()>);

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

impl Client {
    /// DescribeCluster on any node; brokers without it (before Kafka 2.8) get the same
    /// answer from Metadata.
    pub async fn describe_cluster(&self) -> Result<ClusterDescription> {
        let conn = self.any_connection().await?;
        let mut nodes: Vec<NodeInfo>;
        let cluster_id;
        let controller_id;
        match conn.version_for::<DescribeClusterRequest>(DESCRIBE_CLUSTER_VERSION_CAP) {
            Ok(v) => {
                let mut req = DescribeClusterRequest::default();
                if v >= 1 {
                    req.endpoint_type = 1;
                }
                let resp = conn.request(&req, v).await?;
                check_code(
                    resp.error_code,
                    || "DescribeCluster".into(),
                    resp.error_message.as_deref(),
                )?;
                cluster_id = resp.cluster_id.to_string();
                controller_id = resp.controller_id.0;
                nodes = resp
                    .brokers
                    .iter()
                    .map(|b| NodeInfo {
                        node_id: b.broker_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                        fenced: b.is_fenced,
                    })
                    .collect();
            }
            Err(ClientError::UnsupportedApi { .. }) => {
                let v = conn.version_for::<MetadataRequest>(super::METADATA_VERSION_CAP)?;
                let mut req = MetadataRequest::default();
                req.topics = Some(Vec::new());
                let resp = conn.request(&req, v).await?;
                cluster_id = resp
                    .cluster_id
                    .as_ref()
                    .map(|c| c.to_string())
                    .unwrap_or_default();
                controller_id = resp.controller_id.0;
                nodes = resp
                    .brokers
                    .iter()
                    .map(|b| NodeInfo {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                        fenced: false,
                    })
                    .collect();
            }
            Err(e) => return Err(e),
        }
        nodes.sort_by_key(|n| n.node_id);
        Ok(ClusterDescription {
            cluster_id,
            controller_id,
            nodes,
        })
    }

    /// ListGroups on one node: the groups it coordinates.
    pub async fn list_groups_on(&self, node: i32) -> Result<Vec<ListedGroup>> {
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<ListGroupsRequest>(LIST_GROUPS_VERSION_CAP)?;
        let resp = conn.request(&ListGroupsRequest::default(), v).await?;
        check_code(
            resp.error_code,
            || format!("ListGroups on node {node}"),
            None,
        )?;
        Ok(resp
            .groups
            .iter()
            .map(|g| ListedGroup {
                group_id: g.group_id.0.to_string(),
                protocol_type: g.protocol_type.to_string(),
                state: g.group_state.to_string(),
                coordinator: node,
            })
            .collect())
    }

    /// DescribeGroups of one group at its coordinator. A group the coordinator does not
    /// know is answered as Kafka does: state Dead, no members. A consumer-protocol (KIP-848)
    /// group, which DescribeGroups answers GROUP_ID_NOT_FOUND, is described with
    /// ConsumerGroupDescribe (protocol type "consumer", protocol = its assignor).
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let node = self.find_coordinator(group).await?;
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<DescribeGroupsRequest>(DESCRIBE_GROUPS_VERSION_CAP)?;
        let req = DescribeGroupsRequest::default().with_groups(vec![GroupId(sb(group))]);
        let resp = conn.request(&req, v).await?;
        let g = resp
            .groups
            .into_iter()
            .find(|g| g.group_id.0.as_str() == group)
            .ok_or_else(|| {
                ClientError::Protocol(format!("DescribeGroups answer lacks group {group}"))
            })?;
        // Not a classic group: GROUP_ID_NOT_FOUND (v6+) or Dead without members (older).
        let unknown = g.error_code == GROUP_ID_NOT_FOUND
            || (g.error_code == 0 && g.group_state.as_str() == "Dead" && g.members.is_empty());
        if unknown && let Ok(cv) = conn.version_for::<ConsumerGroupDescribeRequest>(0) {
            let req =
                ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(sb(group))]);
            let resp = conn.request(&req, cv).await?;
            let c = resp
                .groups
                .into_iter()
                .find(|c| c.group_id.0.as_str() == group)
                .ok_or_else(|| {
                    ClientError::Protocol(format!(
                        "ConsumerGroupDescribe answer lacks group {group}"
                    ))
                })?;
            if c.error_code != GROUP_ID_NOT_FOUND {
                check_code(
                    c.error_code,
                    || format!("ConsumerGroupDescribe {group}"),
                    c.error_message.as_deref(),
                )?;
                return Ok(consumer_group_description(group, c, node));
            }
        }
        check_code(
            g.error_code,
            || format!("DescribeGroups {group}"),
            g.error_message.as_deref(),
        )?;
        Ok(GroupDescription {
            group_id: group.to_owned(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
            protocol: g.protocol_data.to_string(),
            members: g
                .members
                .into_iter()
                .map(|m| MemberDescription {
                    member_id: m.member_id.to_string(),
                    instance_id: m.group_instance_id.map(|i| i.to_string()),
                    client_id: m.client_id.to_string(),
                    client_host: m.client_host.to_string(),
                    assignment: m.member_assignment,
                    partitions: None,
                })
                .collect(),
            coordinator: node,
        })
    }

    /// DeleteGroups of one group at its coordinator (Kafka 68 NON_EMPTY_GROUP while it has
    /// members, 69 GROUP_ID_NOT_FOUND for an unknown one).
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let node = self.find_coordinator(group).await?;
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<DeleteGroupsRequest>(DELETE_GROUPS_VERSION_CAP)?;
        let req = DeleteGroupsRequest::default().with_groups_names(vec![GroupId(sb(group))]);
        let resp = conn.request(&req, v).await?;
        let r = resp
            .results
            .iter()
            .find(|r| r.group_id.0.as_str() == group)
            .ok_or_else(|| {
                ClientError::Protocol(format!("DeleteGroups answer lacks group {group}"))
            })?;
        check_code(r.error_code, || format!("DeleteGroups {group}"), None)
    }

    /// OffsetDelete: removes the committed offsets of `topics` ((topic, partitions)) from
    /// `group`. The group-level error fails the call; partition errors (e.g. 86
    /// GROUP_SUBSCRIBED_TO_TOPIC) are in the outcomes.
    pub async fn offset_delete(
        &self,
        group: &str,
        topics: &[(&str, &[i32])],
    ) -> Result<Vec<PartitionOutcome>> {
        let node = self.find_coordinator(group).await?;
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<OffsetDeleteRequest>(OFFSET_DELETE_VERSION_CAP)?;
        let req = OffsetDeleteRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(sb(t)))
                            .with_partitions(
                                ps.iter()
                                    .map(|&p| {
                                        OffsetDeleteRequestPartition::default()
                                            .with_partition_index(p)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = conn.request(&req, v).await?;
        check_code(resp.error_code, || format!("OffsetDelete {group}"), None)?;
        let mut out = Vec::new();
        for t in &resp.topics {
            let topic = t.name.0.to_string();
            for p in &t.partitions {
                let r = check_code(
                    p.error_code,
                    || format!("OffsetDelete {group} {topic}/{}", p.partition_index),
                    None,
                );
                out.push((topic.clone(), p.partition_index, r));
            }
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// DescribeConfigs of one topic: every config with its value and source.
    pub async fn describe_topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let conn = self.any_connection().await?;
        let v = conn.version_for::<DescribeConfigsRequest>(DESCRIBE_CONFIGS_VERSION_CAP)?;
        let req = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(sb(topic))
                .with_configuration_keys(None),
        ]);
        let resp = conn.request(&req, v).await?;
        let r = resp.results.into_iter().next().ok_or_else(|| {
            ClientError::Protocol(format!("DescribeConfigs answer lacks topic {topic}"))
        })?;
        check_code(
            r.error_code,
            || format!("DescribeConfigs {topic}"),
            r.error_message.as_deref(),
        )?;
        let mut out: Vec<ConfigEntry> = r
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: c.config_source,
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// IncrementalAlterConfigs of one topic: sets and deletes configs in one request,
    /// validated by the broker (Kafka 40 INVALID_CONFIG and the like).
    pub async fn alter_topic_configs(&self, topic: &str, changes: &[ConfigChange]) -> Result<()> {
        let conn = self.any_connection().await?;
        let v = conn
            .version_for::<IncrementalAlterConfigsRequest>(INCREMENTAL_ALTER_CONFIGS_VERSION_CAP)?;
        let configs = changes
            .iter()
            .map(|c| match c {
                ConfigChange::Set(k, val) => AlterableConfig::default()
                    .with_name(sb(k))
                    .with_config_operation(0)
                    .with_value(Some(sb(val))),
                ConfigChange::Delete(k) => AlterableConfig::default()
                    .with_name(sb(k))
                    .with_config_operation(1)
                    .with_value(None),
            })
            .collect();
        let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(RESOURCE_TOPIC)
                .with_resource_name(sb(topic))
                .with_configs(configs),
        ]);
        let resp = conn.request(&req, v).await?;
        for r in &resp.responses {
            check_code(
                r.error_code,
                || format!("IncrementalAlterConfigs {topic}"),
                r.error_message.as_deref(),
            )?;
        }
        Ok(())
    }

    /// CreatePartitions: grows `topic` to `count` partitions in total.
    pub async fn create_partitions(&self, topic: &str, count: i32, timeout_ms: i32) -> Result<()> {
        let md = self.metadata(Some(&[])).await?;
        let conn = match self.node_connection(md.controller_id).await {
            Ok(c) if md.controller_id >= 0 => c,
            _ => self.any_connection().await?,
        };
        let v = conn.version_for::<CreatePartitionsRequest>(CREATE_PARTITIONS_VERSION_CAP)?;
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![
                CreatePartitionsTopic::default()
                    .with_name(TopicName(sb(topic)))
                    .with_count(count)
                    .with_assignments(None),
            ]);
        let resp = conn.request(&req, v).await?;
        for r in &resp.results {
            check_code(
                r.error_code,
                || format!("CreatePartitions {topic}"),
                r.error_message.as_deref(),
            )?;
        }
        Ok(())
    }

    /// DescribeLogDirs on one node for some partitions of `topic`: the size of each replica
    /// the node holds (summed over its log dirs).
    pub async fn describe_log_dirs_on(
        &self,
        node: i32,
        topic: &str,
        partitions: &[i32],
    ) -> Result<Vec<ReplicaSize>> {
        let conn = self.node_connection(node).await?;
        let v = conn.version_for::<DescribeLogDirsRequest>(DESCRIBE_LOG_DIRS_VERSION_CAP)?;
        let req = DescribeLogDirsRequest::default().with_topics(Some(vec![
            DescribableLogDirTopic::default()
                .with_topic(TopicName(sb(topic)))
                .with_partitions(partitions.to_vec()),
        ]));
        let resp = conn.request(&req, v).await?;
        check_code(
            resp.error_code,
            || format!("DescribeLogDirs on node {node}"),
            None,
        )?;
        let mut out: Vec<ReplicaSize> = Vec::new();
        for dir in &resp.results {
            if dir.error_code != 0 {
                continue;
            }
            for t in &dir.topics {
                for p in &t.partitions {
                    if p.is_future_key {
                        continue;
                    }
                    match out
                        .iter_mut()
                        .find(|r| r.topic == t.name.0.as_str() && r.partition == p.partition_index)
                    {
                        Some(r) => r.size_bytes += p.partition_size,
                        None => out.push(ReplicaSize {
                            topic: t.name.0.to_string(),
                            partition: p.partition_index,
                            size_bytes: p.partition_size,
                        }),
                    }
                }
            }
        }
        Ok(out)
    }

    /// InitProducerId for an idempotent (non-transactional) producer: (producer id, epoch).
    pub async fn init_producer_id(&self) -> Result<(i64, i16)> {
        let conn = self.any_connection().await?;
        let v = conn.version_for::<InitProducerIdRequest>(INIT_PRODUCER_ID_VERSION_CAP)?;
        let mut req = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(-1);
        if v >= 3 {
            req.producer_id = ProducerId(-1);
            req.producer_epoch = -1;
        }
        let resp = conn.request(&req, v).await?;
        check_code(resp.error_code, || "InitProducerId".into(), None)?;
        Ok((resp.producer_id.0, resp.producer_epoch))
    }
}

/// A consumer-protocol (KIP-848) group from ConsumerGroupDescribe, as `describe_group`
/// answers it.
fn consumer_group_description(
    group: &str,
    g: kafka_protocol::messages::consumer_group_describe_response::DescribedGroup,
    node: i32,
) -> GroupDescription {
    GroupDescription {
        group_id: group.to_owned(),
        state: g.group_state.to_string(),
        protocol_type: "consumer".into(),
        protocol: g.assignor_name.to_string(),
        members: g
            .members
            .into_iter()
            .map(|m| MemberDescription {
                member_id: m.member_id.to_string(),
                instance_id: m.instance_id.map(|i| i.to_string()),
                client_id: m.client_id.to_string(),
                client_host: m.client_host.to_string(),
                assignment: Bytes::new(),
                partitions: Some(
                    m.assignment
                        .topic_partitions
                        .into_iter()
                        .map(|t| (t.topic_name.0.to_string(), t.partitions))
                        .collect(),
                ),
            })
            .collect(),
        coordinator: node,
    }
}
