//! FindCoordinator (key 10): names the shard (broker node) that coordinates a group,
//! including the batched coordinator_keys form of v4+.
//!
//! Runs on: any shard; pure computation (crc32c(group) % shards), no cross-core hop.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use crate::groups::errors::*;
use crate::handlers::{ApiSpec, Reply, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::FindCoordinator,
    min_version: 0,
    max_version: 4,
};
/// Kafka's coordinator key types: 0 = group, 1 = transaction.
const KEY_TYPE_GROUP: i8 = 0;

struct Answer {
    error: i16,
    message: Option<String>,
    node: i32,
    host: String,
    port: i32,
}

/// The coordinator's endpoint on the listener the client connected through.
fn answer(shard: &Shard, session: &Session, key: &str, key_type: i8) -> Answer {
    if key_type != KEY_TYPE_GROUP {
        // No transactions (or share groups) here: a non-retriable error, not a coordinator
        // the client would then hammer with requests we cannot serve.
        return Answer {
            error: INVALID_REQUEST,
            message: Some(format!("coordinator key type {key_type} is not supported")),
            node: -1,
            host: String::new(),
            port: -1,
        };
    }
    let host = crate::groups::coordinator_host(key, &shard.config);
    let meta = shard.meta();
    let found = if host == shard.config.node_id {
        let s = crate::groups::coordinator_shard(key, shard.count);
        shard
            .nodes
            .get(session.listener)
            .and_then(|l| l.ports.get(s).map(|p| (s, l.host.clone(), *p)))
    } else {
        meta.brokers.get(&host).and_then(|b| {
            let s = crate::groups::coordinator_shard(key, b.ports.len());
            let (h, ports) = b.endpoint(&session.listener_name)?;
            ports.get(s).map(|p| (s, h.to_string(), *p))
        })
    };
    match found {
        Some((s, h, port)) => Answer {
            error: NONE,
            message: None,
            node: crate::metadata::node_id(host, s),
            host: h,
            port: i32::from(port),
        },
        None => Answer {
            error: COORDINATOR_NOT_AVAILABLE,
            message: None,
            node: -1,
            host: String::new(),
            port: -1,
        },
    }
}

pub fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: FindCoordinatorRequest = req.decode()?;
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        resp.coordinators = body
            .coordinator_keys
            .iter()
            .map(|k| {
                let a = answer(shard, session, k, body.key_type);
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(a.node))
                    .with_host(str_bytes(a.host))
                    .with_port(a.port)
                    .with_error_code(a.error)
                    .with_error_message(a.message.map(str_bytes))
            })
            .collect();
    } else {
        let a = answer(shard, session, &body.key, body.key_type);
        resp = resp
            .with_error_code(a.error)
            .with_node_id(BrokerId(a.node))
            .with_host(str_bytes(a.host))
            .with_port(a.port);
        if req.version >= 1 {
            resp.error_message = a.message.map(str_bytes);
        }
    }
    Ok(Reply::Frame(req.encode_response(&resp)?))
}
