//! CreatePartitions (key 37): grow a topic's partition count.
//!
//! Runs on: any shard; the controller on shard 0 assigns the new partitions to shards.
//! Authorization (Kafka's): ALTER on each topic; a topic refused gets
//! TOPIC_AUTHORIZATION_FAILED and is not sent to the controller (a topic named twice is
//! left to the controller, which answers both INVALID_REQUEST, as Kafka checks duplicates
//! first).

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreatePartitions,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: CreatePartitionsRequest = req.decode()?;
    let mut copies = std::collections::HashMap::new();
    for t in &body.topics {
        *copies.entry(t.name.0.as_str()).or_insert(0usize) += 1;
    }
    // Per topic of the request: its index among the asks sent to the controller, or None
    // when the principal may not alter it.
    let mut ask_of = Vec::with_capacity(body.topics.len());
    let mut asks: Vec<(String, i32)> = Vec::with_capacity(body.topics.len());
    for t in &body.topics {
        let name = t.name.0.as_str();
        if copies.get(name).copied().unwrap_or(1) == 1
            && !session.may(shard, op::ALTER, resource::TOPIC, name)
        {
            ask_of.push(None);
        } else {
            ask_of.push(Some(asks.len()));
            asks.push((name.to_string(), t.count));
        }
    }
    let validate_only = body.validate_only;
    let results = if asks.is_empty() {
        Vec::new()
    } else {
        shard
            .call(0, move |s| async move {
                s.controller()
                    .create_partitions(&s, asks, validate_only)
                    .await
            })
            .await
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (t, ask) in body.topics.iter().zip(ask_of) {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let Some(k) = ask else {
            out.push(
                r.with_error_code(error::TOPIC_AUTHORIZATION_FAILED)
                    .with_error_message(Some(str_bytes("Topic authorization failed."))),
            );
            continue;
        };
        match results.get(k) {
            Some(Ok(())) => r = r.with_error_code(error::NONE),
            Some(Err(e)) => {
                r = r
                    .with_error_code(e.code)
                    .with_error_message(Some(str_bytes(e.message.clone())))
            }
            None => r = r.with_error_code(error::NOT_CONTROLLER),
        }
        out.push(r);
    }
    let resp = CreatePartitionsResponse::default().with_results(out);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
