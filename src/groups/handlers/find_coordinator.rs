//! FindCoordinator (key 10): names the node that coordinates a group (the leader of its
//! `__consumer_offsets` partition) or a transactional id (the leader of its
//! `__transaction_state` partition), including the batched coordinator_keys form of v4+;
//! creates the internal topic when it does not exist yet. Authorization (Kafka's):
//! DESCRIBE on the group (else GROUP_AUTHORIZATION_FAILED) or on the transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED), per key.
//!
//! Runs on: any shard, from its own metadata copy; no cross-core hop.

use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

use crate::groups::errors::*;
use crate::handlers::{ApiSpec, Reply, respond, str_bytes};
use crate::metadata::{host_of, shard_of};
use crate::protocol::acl::op;
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
const KEY_TYPE_TRANSACTION: i8 = 1;

struct Answer {
    error: i16,
    message: Option<String>,
    node: i32,
    host: String,
    port: i32,
}

/// The coordinator's endpoint on the listener the client connected through.
fn answer(shard: &Rc<Shard>, session: &Session, key: &str, key_type: i8) -> Answer {
    let none = |error: i16, message: Option<String>| Answer {
        error,
        message,
        node: -1,
        host: String::new(),
        port: -1,
    };
    let (resource_type, refused) = match key_type {
        KEY_TYPE_GROUP => (
            crate::acl::resource::GROUP,
            crate::protocol::error::GROUP_AUTHORIZATION_FAILED,
        ),
        KEY_TYPE_TRANSACTION => (
            crate::acl::resource::TRANSACTIONAL_ID,
            crate::protocol::error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        ),
        _ => (0, NONE),
    };
    if refused != NONE && !session.may(shard, op::DESCRIBE, resource_type, key) {
        return none(refused, None);
    }
    let meta = shard.meta();
    let home = match key_type {
        KEY_TYPE_GROUP => crate::groups::home(&meta, key),
        KEY_TYPE_TRANSACTION => shard.txns.parts.home(&meta, key),
        // Share groups (2) and anything newer: a non-retriable error, not a coordinator the
        // client would then hammer with requests we cannot serve.
        _ => {
            return none(
                INVALID_REQUEST,
                Some(format!("coordinator key type {key_type} is not supported")),
            );
        }
    };
    let Some((p, pm)) = home else {
        // Kafka creates the internal topic on the first FindCoordinator; the client retries.
        if key_type == KEY_TYPE_GROUP {
            shard.groups.request_topic(shard);
        } else {
            shard.txns.request_topic(shard);
        }
        return none(
            COORDINATOR_NOT_AVAILABLE,
            Some("the coordinator's internal topic is being created".into()),
        );
    };
    let leader = pm.leader;
    let endpoint = if leader < 0 {
        None
    } else if host_of(leader) == shard.config.node_id {
        shard
            .nodes
            .get(session.listener)
            .and_then(|l| l.ports.get(shard_of(leader)).map(|p| (l.host.clone(), *p)))
    } else {
        meta.brokers
            .get(&host_of(leader))
            .filter(|b| !b.fenced)
            .and_then(|b| {
                let (h, ports) = b.endpoint(&session.listener_name)?;
                ports.get(shard_of(leader)).map(|p| (h.to_string(), *p))
            })
    };
    match endpoint {
        Some((host, port)) => Answer {
            error: NONE,
            message: None,
            node: leader,
            host,
            port: i32::from(port),
        },
        None => none(
            COORDINATOR_NOT_AVAILABLE,
            Some(format!(
                "its internal topic's partition {p} has no leader now"
            )),
        ),
    }
}

/// How long FindCoordinator waits for the offsets topic to be created and the group's
/// partition to be loaded on this host, before answering COORDINATOR_NOT_AVAILABLE (the
/// client retries) or naming a coordinator that is still loading.
const FIND_COORDINATOR_WAIT: Duration = Duration::from_millis(3_000);
/// Poll period of that wait.
const FIND_COORDINATOR_POLL: Duration = Duration::from_millis(5);

/// The answer for one key, waiting (until `deadline`) for the offsets topic to exist and,
/// when a shard of this host leads the group's partition, for it to be loaded there.
async fn answer_when_ready(
    shard: &Rc<Shard>,
    session: &Session,
    key: &str,
    key_type: i8,
    deadline: Instant,
) -> Answer {
    loop {
        let a = answer(shard, session, key, key_type);
        let ready = match a.error {
            COORDINATOR_NOT_AVAILABLE => false,
            NONE if host_of(a.node) == shard.config.node_id => {
                let key = key.to_string();
                shard
                    .call(shard_of(a.node), move |s| async move {
                        let code = if key_type == KEY_TYPE_GROUP {
                            s.groups.check(&s, &key)
                        } else {
                            s.txns.parts.check(&s, &key)
                        };
                        code != COORDINATOR_LOAD_IN_PROGRESS
                    })
                    .await
                    .unwrap_or(true)
            }
            _ => true,
        };
        if ready || Instant::now() >= deadline || shard.shutting_down.get() {
            return a;
        }
        glommio::timer::sleep(FIND_COORDINATOR_POLL).await;
    }
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: FindCoordinatorRequest = req.decode()?;
    let deadline = Instant::now() + FIND_COORDINATOR_WAIT;
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        for k in &body.coordinator_keys {
            let a = answer_when_ready(shard, session, k, body.key_type, deadline).await;
            resp.coordinators.push(
                Coordinator::default()
                    .with_key(k.clone())
                    .with_node_id(BrokerId(a.node))
                    .with_host(str_bytes(a.host))
                    .with_port(a.port)
                    .with_error_code(a.error)
                    .with_error_message(a.message.map(str_bytes)),
            );
        }
    } else {
        let a = answer_when_ready(shard, session, &body.key, body.key_type, deadline).await;
        resp = resp
            .with_error_code(a.error)
            .with_node_id(BrokerId(a.node))
            .with_host(str_bytes(a.host))
            .with_port(a.port);
        if req.version >= 1 {
            resp.error_message = a.message.map(str_bytes);
        }
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
