//! EndTxn (key 26): commit or abort the open transaction. Answered once the prepared
//! state is durable on the transaction log's in-sync replicas; the markers follow in the
//! background (`txn`), and the producer's next transaction waits for them
//! (CONCURRENT_TRANSACTIONS until then).
//!
//! Runs on: the shard coordinating the transactional id; elsewhere NOT_COORDINATOR.

use std::rc::Rc;

use kafka_protocol::messages::{ApiKey, EndTxnRequest, EndTxnResponse};

use super::{ApiSpec, Reply, respond};
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::EndTxn,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: EndTxnRequest = req.decode()?;
    let code = match shard
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
    };
    let resp = EndTxnResponse::default().with_error_code(code);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
