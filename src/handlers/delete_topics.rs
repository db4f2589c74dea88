//! DeleteTopics (key 20): by name (v1-5) or by name or id (v6).
//!
//! Runs on: any shard; the controller on shard 0 removes the topics and every owning shard
//! deletes the partition files before the answer is sent.

use std::rc::Rc;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{ApiKey, DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{ApiSpec, Reply, respond, str_bytes, uuid};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DeleteTopics,
    min_version: 1,
    max_version: 6,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DeleteTopicsRequest = req.decode()?;
    let meta = shard.meta();
    // (name as resolved, id as asked): an unknown id resolves to no name.
    let mut asked: Vec<(Option<String>, Option<uuid::Uuid>)> = body
        .topic_names
        .iter()
        .map(|n| (Some(n.0.to_string()), None))
        .collect();
    for t in &body.topics {
        match &t.name {
            Some(n) => asked.push((Some(n.0.to_string()), None)),
            None => asked.push((
                meta.topic_by_id(t.topic_id.as_bytes())
                    .map(|m| m.name.clone()),
                Some(t.topic_id),
            )),
        }
    }
    let internal = crate::internal_topic::is_internal;
    // Kafka: DELETE on each topic; refused ones are answered without asking the controller.
    let allowed = |n: &str| session.may(shard, op::DELETE, resource::TOPIC, n);
    let names: Vec<String> = asked
        .iter()
        .filter_map(|(n, _)| n.clone())
        .filter(|n| !internal(n) && allowed(n))
        .collect();
    let mut results = shard
        .call(0, move |s| async move {
            s.controller().delete_topics(&s, names).await
        })
        .await
        .unwrap_or_default()
        .into_iter();
    let mut out = Vec::new();
    for (name, id) in asked {
        let mut r = DeletableTopicResult::default()
            .with_name(name.clone().map(|n| TopicName(str_bytes(n))));
        match name {
            None => {
                r = r
                    .with_topic_id(id.unwrap_or_default())
                    .with_error_code(error::UNKNOWN_TOPIC_ID)
                    .with_error_message(Some(str_bytes(
                        "This server does not host this topic ID.",
                    )));
            }
            Some(n) if internal(&n) => {
                r = r
                    .with_error_code(error::INVALID_TOPIC_EXCEPTION)
                    .with_error_message(Some(str_bytes(format!(
                        "{n} is an internal topic (coordinator state)"
                    ))));
            }
            Some(n) if !allowed(&n) => {
                r = r
                    .with_error_code(error::TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(Some(str_bytes("Authorization failed.")))
            }
            Some(_) => match results.next() {
                Some(Ok(t)) => r = r.with_topic_id(uuid(t.id)).with_error_code(error::NONE),
                Some(Err(e)) => {
                    r = r
                        .with_error_code(e.code)
                        .with_error_message(Some(str_bytes(e.message)))
                }
                None => r = r.with_error_code(error::NOT_CONTROLLER),
            },
        }
        out.push(r);
    }
    let resp = DeleteTopicsResponse::default().with_responses(out);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
