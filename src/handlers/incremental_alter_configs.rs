//! IncrementalAlterConfigs (key 44): SET, DELETE, APPEND and SUBTRACT on topic configs
//! (APPEND/SUBTRACT only on list configs), validated and applied through the controller
//! quorum; broker resources as in `alter_configs`.
//!
//! Runs on: any shard (see `alter_configs::alter`, which also authorizes each resource).

use std::rc::Rc;

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    ApiKey, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};

use super::alter_configs::{AlterItem, alter, duplicate_key};
use super::{ApiSpec, Reply, respond, str_bytes};
use crate::cluster::state::ConfigOp;
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::IncrementalAlterConfigs,
    min_version: 0,
    max_version: 1,
};
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;
const OP_APPEND: i8 = 2;
const OP_SUBTRACT: i8 = 3;

fn op(code: i8, name: &str, value: Option<String>) -> Result<ConfigOp, String> {
    let need =
        |v: Option<String>| v.ok_or_else(|| format!("Null value not supported for : {name}"));
    match code {
        OP_SET => need(value).map(ConfigOp::Set),
        OP_DELETE => Ok(ConfigOp::Delete),
        OP_APPEND => need(value).map(ConfigOp::Append),
        OP_SUBTRACT => need(value).map(ConfigOp::Subtract),
        other => Err(format!("Unknown config operation {other} for {name}")),
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: IncrementalAlterConfigsRequest = req.decode()?;
    let items = body
        .resources
        .iter()
        .map(|r| {
            let ops = match duplicate_key(r.configs.iter().map(|c| c.name.to_string())) {
                Some(k) => Err(format!("Error due to duplicate config keys: {k}")),
                None => r
                    .configs
                    .iter()
                    .map(|c| {
                        let name = c.name.to_string();
                        op(
                            c.config_operation,
                            &name,
                            c.value.as_ref().map(|v| v.to_string()),
                        )
                        .map(|o| (name, o))
                    })
                    .collect(),
            };
            AlterItem {
                resource_type: r.resource_type,
                resource_name: r.resource_name.to_string(),
                ops,
                replace: false,
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
    let resp = IncrementalAlterConfigsResponse::default().with_responses(responses);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
