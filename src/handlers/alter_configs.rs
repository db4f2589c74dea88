//! AlterConfigs (key 33, the legacy API: a topic's configs become exactly the ones sent)
//! and the resource checks it shares with IncrementalAlterConfigs (key 44).
//!
//! Runs on: any shard; topic config changes go to the controller on shard 0, which
//! proposes them through the quorum (`MetaCommand::AlterTopicConfigs`) and answers once
//! this host's shards run with them. osprey has no dynamic broker configs: a change to a
//! broker resource is refused with INVALID_REQUEST, as Kafka refuses read-only ones.
//! Authorization (Kafka's, after the duplicate-resource check and before any validation):
//! ALTER_CONFIGS on the topic (else TOPIC_AUTHORIZATION_FAILED) or on the cluster for
//! broker resources (else CLUSTER_AUTHORIZATION_FAILED), per resource.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse, ApiKey};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::cluster::state::{ConfigOp, TopicConfigChange};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AlterConfigs,
    min_version: 0,
    max_version: 2,
};
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// One resource of an alter request, decoded from either API.
pub struct AlterItem {
    pub resource_type: i8,
    pub resource_name: String,
    /// The operations, or the INVALID_REQUEST message for a malformed resource.
    pub ops: Result<Vec<(String, ConfigOp)>, String>,
    /// Legacy AlterConfigs: replace every topic override.
    pub replace: bool,
}

/// Kafka's check shared by both APIs: the same config key twice in one resource.
pub fn duplicate_key(names: impl IntoIterator<Item = String>) -> Option<String> {
    let mut seen = HashSet::new();
    names.into_iter().find(|n| !seen.insert(n.clone()))
}

/// (error code, message) per item, in request order.
pub async fn alter(
    shard: &Rc<Shard>,
    session: &Session,
    items: Vec<AlterItem>,
    validate_only: bool,
) -> Vec<(i16, Option<String>)> {
    let mut answers: Vec<Option<(i16, Option<String>)>> = Vec::with_capacity(items.len());
    let mut changes = Vec::new();
    let mut change_of = Vec::new();
    let mut count = std::collections::HashMap::new();
    for it in &items {
        *count
            .entry((it.resource_type, it.resource_name.clone()))
            .or_insert(0usize) += 1;
    }
    for (i, it) in items.into_iter().enumerate() {
        let bad = |m: String| Some((error::INVALID_REQUEST, Some(m)));
        let copies = count
            .get(&(it.resource_type, it.resource_name.clone()))
            .copied()
            .unwrap_or(1);
        if copies > 1 {
            answers.push(bad(format!(
                "Error due to duplicate resource {}:{} in the request",
                it.resource_type, it.resource_name
            )));
            continue;
        }
        if let Some(code) = super::describe_configs::config_resource_denied(
            shard,
            session,
            crate::protocol::acl::op::ALTER_CONFIGS,
            it.resource_type,
            &it.resource_name,
        ) {
            let message = super::describe_configs::denied_message(code).to_string();
            answers.push(Some((code, Some(message))));
            continue;
        }
        let ops = match it.ops {
            Ok(ops) => ops,
            Err(m) => {
                answers.push(bad(m));
                continue;
            }
        };
        match it.resource_type {
            RESOURCE_TOPIC => {
                changes.push(TopicConfigChange {
                    topic: it.resource_name,
                    replace: it.replace,
                    ops,
                });
                change_of.push(i);
                answers.push(None);
            }
            RESOURCE_BROKER => {
                let name = &it.resource_name;
                let here = name.is_empty()
                    || name.parse::<i32>().is_ok_and(|n| {
                        n >= 0
                            && crate::metadata::host_of(n) == shard.config.node_id
                            && crate::metadata::shard_of(n) < shard.count
                    });
                answers.push(if !here {
                    bad(format!(
                        "Unexpected broker id, expected a node of host {} or empty string, but received {name}",
                        shard.config.node_id
                    ))
                } else if ops.is_empty() {
                    Some((error::NONE, None))
                } else {
                    let names: Vec<&str> = ops.iter().map(|(n, _)| n.as_str()).collect();
                    bad(format!(
                        "Cannot update these configs dynamically: {names:?} (osprey has no dynamic broker configs)"
                    ))
                });
            }
            other => answers.push(bad(format!(
                "Unsupported resource type {other} for altering configs"
            ))),
        }
    }
    if !changes.is_empty() {
        let n = changes.len();
        let results = shard
            .call(0, move |s| async move {
                s.controller()
                    .alter_topic_configs(changes, validate_only)
                    .await
            })
            .await
            .unwrap_or_default();
        for (k, i) in change_of.into_iter().enumerate() {
            answers[i] = Some(match results.get(k) {
                Some(Ok(())) => (error::NONE, None),
                Some(Err(e)) => (e.code, Some(e.message.clone())),
                None => (
                    error::REQUEST_TIMED_OUT,
                    Some(format!("the controller did not answer for {n} topics")),
                ),
            });
        }
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or((error::NONE, None)))
        .collect()
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: AlterConfigsRequest = req.decode()?;
    let items = body
        .resources
        .iter()
        .map(|r| {
            let ops = match duplicate_key(r.configs.iter().map(|c| c.name.to_string())) {
                Some(k) => Err(format!("Error due to duplicate config keys: {k}")),
                None => r
                    .configs
                    .iter()
                    .map(|c| match &c.value {
                        Some(v) => Ok((c.name.to_string(), ConfigOp::Set(v.to_string()))),
                        None => Err(format!("Null value not supported for : {}", c.name)),
                    })
                    .collect(),
            };
            AlterItem {
                resource_type: r.resource_type,
                resource_name: r.resource_name.to_string(),
                ops,
                replace: true,
            }
        })
        .collect();
    let answers = alter(shard, session, items, body.validate_only).await;
    let responses = body
        .resources
        .iter()
        .zip(answers)
        .map(|(r, (code, msg))| {
            AlterConfigsResourceResponse::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone())
                .with_error_code(code)
                .with_error_message(msg.map(str_bytes))
        })
        .collect();
    let resp = AlterConfigsResponse::default().with_responses(responses);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
