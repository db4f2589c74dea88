//! InitProducerId (key 22): producer ids for idempotent and transactional producers.
//!
//! Runs on: any shard for idempotent producers (ids from the shard's block of the
//! cluster-wide producer-id space); the coordinating shard of the transactional id for
//! transactional ones (`txn::TxnCoordinator::init_producer_id`: the id's producer id with
//! its epoch bumped, fencing older instances).
//!
//! Authorization (under `--authorizer`), as Kafka: WRITE on the transactional id when one
//! is given (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED); without one, IDEMPOTENT_WRITE on
//! the cluster or WRITE on some topic (else CLUSTER_AUTHORIZATION_FAILED). An empty (not
//! null) transactional id is INVALID_REQUEST.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::InitProducerId,
    min_version: 0,
    max_version: 4,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: InitProducerIdRequest = req.decode()?;
    let mut resp = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    let txn_id = body.transactional_id.as_ref().map(|t| t.0.as_str());
    if let Some(id) = txn_id
        && !session.may(shard, op::WRITE, resource::TRANSACTIONAL_ID, id)
    {
        resp = resp.with_error_code(error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED);
    } else if txn_id.is_none() && !idempotent_write_allowed(shard, session) {
        resp = resp.with_error_code(error::CLUSTER_AUTHORIZATION_FAILED);
    } else if txn_id == Some("") {
        // Kafka's coordinator: an empty (not null) transactional id is no id at all.
        resp = resp.with_error_code(error::INVALID_REQUEST);
    } else if let Some(txn_id) = body.transactional_id.as_ref() {
        let expected = (req.version >= 3 && body.producer_id.0 >= 0 && body.producer_epoch >= 0)
            .then_some((body.producer_id.0, body.producer_epoch));
        match shard
            .txns
            .init_producer_id(
                shard,
                txn_id.0.as_str(),
                body.transaction_timeout_ms,
                expected,
            )
            .await
        {
            Ok((pid, epoch)) => {
                resp = resp
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch)
            }
            Err(code) => resp = resp.with_error_code(crate::txn::fenced_for(code, req.version, 4)),
        }
    } else if body.producer_id.0 >= 0 && body.producer_epoch >= 0 {
        // KIP-360: an idempotent producer that lost track of its sequences bumps its epoch
        // and keeps its id; the storage then accepts sequence 0 under the new epoch.
        match body.producer_epoch.checked_add(1) {
            Some(epoch) if epoch < i16::MAX => {
                resp = resp
                    .with_producer_id(body.producer_id)
                    .with_producer_epoch(epoch);
            }
            _ => match shard.allocate_producer_id().await {
                Ok(id) => resp = resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
                Err(e) => {
                    log::error!("cannot allocate a producer id: {e}");
                    resp = resp.with_error_code(error::KAFKA_STORAGE_ERROR);
                }
            },
        }
    } else {
        match shard.allocate_producer_id().await {
            Ok(id) => resp = resp.with_producer_id(ProducerId(id)).with_producer_epoch(0),
            Err(e) => {
                log::error!("cannot allocate a producer id: {e}");
                resp = resp.with_error_code(error::KAFKA_STORAGE_ERROR);
            }
        }
    }
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// Kafka 3's rule for an idempotent producer: IDEMPOTENT_WRITE on the cluster, or WRITE on
/// some topic (literal or prefixed).
fn idempotent_write_allowed(shard: &Shard, session: &Session) -> bool {
    if shard.config.authorizer.is_none() || session.may_cluster(shard, op::IDEMPOTENT_WRITE) {
        return true;
    }
    let meta = shard.meta();
    meta.topics
        .keys()
        .any(|t| session.may(shard, op::WRITE, crate::acl::resource::TOPIC, t))
}
