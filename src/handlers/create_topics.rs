//! CreateTopics (key 19), validate_only included.
//!
//! Runs on: any shard; the work is done by the controller on shard 0.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse};

use super::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::acl::resource;
use crate::controller::{NewTopic, TopicError};
use crate::metadata::TopicMeta;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;
use crate::topic_config::{self, TOPIC_CONFIGS};

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreateTopics,
    min_version: 2,
    max_version: 7,
};
/// DescribeConfigs config_source values.
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: CreateTopicsRequest = req.decode()?;
    let mut early: Vec<Option<TopicError>> = Vec::new();
    let mut new_topics = Vec::new();
    // Kafka: CREATE on the cluster, or on each topic.
    let may_create_any = session.may_cluster(shard, op::CREATE);
    for t in &body.topics {
        let mut configs = BTreeMap::new();
        let mut err = None;
        for c in &t.configs {
            match &c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => {
                    err = Some(TopicError {
                        code: error::INVALID_CONFIG,
                        message: format!("config `{}` has a null value", c.name),
                    })
                }
            }
        }
        if !t.assignments.is_empty() {
            err = Some(TopicError {
                code: error::INVALID_REPLICA_ASSIGNMENT,
                message: "manual replica assignment is not supported: osprey places partitions on shards itself".into(),
            });
        }
        if crate::internal_topic::is_internal(t.name.0.as_str()) {
            err = Some(TopicError {
                code: error::INVALID_REQUEST,
                message: format!(
                    "{} is internal: the broker creates it on the first FindCoordinator",
                    t.name.0
                ),
            });
        } else if !may_create_any
            && !session.may(shard, op::CREATE, resource::TOPIC, t.name.0.as_str())
        {
            err = Some(TopicError {
                code: error::TOPIC_AUTHORIZATION_FAILED,
                message: "Authorization failed.".into(),
            });
        }
        early.push(err);
        new_topics.push(NewTopic {
            name: t.name.0.to_string(),
            num_partitions: t.num_partitions,
            replication_factor: t.replication_factor,
            configs,
        });
    }
    // Send only the topics that passed the early checks; keep the request's order.
    let to_create: Vec<NewTopic> = new_topics
        .into_iter()
        .zip(early.iter())
        .filter(|(_, e)| e.is_none())
        .map(|(t, _)| t)
        .collect();
    let validate_only = body.validate_only;
    let mut results = shard
        .call(0, move |s| async move {
            s.controller()
                .create_topics(&s, to_create, validate_only)
                .await
        })
        .await
        .unwrap_or_default()
        .into_iter();
    let mut out = Vec::new();
    for (t, e) in body.topics.iter().zip(early) {
        let r: Result<TopicMeta, TopicError> = match e {
            Some(e) => Err(e),
            None => results.next().unwrap_or(Err(TopicError {
                code: error::NOT_CONTROLLER,
                message: "controller unavailable".into(),
            })),
        };
        let result = match r {
            Ok(meta) => {
                let configs = TOPIC_CONFIGS
                    .iter()
                    .map(|spec| {
                        let set = meta.configs.contains_key(spec.name);
                        CreatableTopicConfigs::default()
                            .with_name(str_bytes(spec.name))
                            .with_value(Some(str_bytes(topic_config::effective(
                                &meta.configs,
                                spec.name,
                                &shard.config,
                            ))))
                            .with_config_source(if set { SOURCE_TOPIC } else { SOURCE_DEFAULT })
                    })
                    .collect();
                CreatableTopicResult::default()
                    .with_name(t.name.clone())
                    .with_topic_id(uuid(meta.id))
                    .with_error_code(error::NONE)
                    .with_num_partitions(meta.partitions.len() as i32)
                    .with_replication_factor(1)
                    .with_configs(Some(configs))
            }
            Err(e) => CreatableTopicResult::default()
                .with_name(t.name.clone())
                .with_error_code(e.code)
                .with_error_message(Some(str_bytes(e.message)))
                .with_num_partitions(-1)
                .with_replication_factor(-1),
        };
        out.push(result);
    }
    let resp = CreateTopicsResponse::default().with_topics(out);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
