//! CreatePartitions (key 37): grow a topic's partition count.
//!
//! Runs on: any shard; the controller on shard 0 assigns the new partitions to shards.

use std::rc::Rc;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{ApiKey, CreatePartitionsRequest, CreatePartitionsResponse};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::CreatePartitions,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: CreatePartitionsRequest = req.decode()?;
    let asks: Vec<(String, i32)> = body
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.count))
        .collect();
    let validate_only = body.validate_only;
    let results = shard
        .call(0, move |s| async move {
            s.controller()
                .create_partitions(&s, asks, validate_only)
                .await
        })
        .await
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, t) in body.topics.iter().enumerate() {
        let mut r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        match results.get(i) {
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
