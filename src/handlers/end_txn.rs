//! EndTxn (key 26): commit or abort the open transaction. Answered once the prepared
//! state is durable on the transaction log's in-sync replicas; the markers follow in the
//! background (`txn`), and the producer's next transaction waits for them
//! (CONCURRENT_TRANSACTIONS until then).
//!
//! Runs on: the shard coordinating the transactional id; elsewhere NOT_COORDINATOR.
//! Under `--authorizer`, WRITE on the transactional id (else
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED), as Kafka.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::EndTxn,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: EndTxnRequest = req.decode()?;
    let txn_id = body.transactional_id.0.as_str();
    let code = if !session.may(shard, op::WRITE, resource::TRANSACTIONAL_ID, txn_id) {
        error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    } else {
        match shard
            .txns
            .end_txn(
                shard,
                body.transactional_id.0.as_str(),
                body.producer_id.0,
                body.producer_epoch,
                body.committed,
            )
            .await
        {
            Ok(()) => error::NONE,
            Err(code) => crate::txn::fenced_for(code, req.version, 2),
        }
    };
    let resp = EndTxnResponse::default().with_error_code(code);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
