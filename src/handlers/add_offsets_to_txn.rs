//! AddOffsetsToTxn (key 25): the group's `__consumer_offsets` partition joins the open
//! transaction, so the transaction's TxnOffsetCommits get its marker.
//!
//! Runs on: the shard coordinating the transactional id (`txn`); elsewhere
//! NOT_COORDINATOR. Asks for the offsets topic (COORDINATOR_NOT_AVAILABLE meanwhile, the
//! client retries) when no group was ever used.

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::{ApiSpec, Reply, respond};
use crate::groups::OFFSETS_TOPIC;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddOffsetsToTxn,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: AddOffsetsToTxnRequest = req.decode()?;
    let home = crate::groups::home(&shard.meta(), body.group_id.0.as_str()).map(|(p, _)| p);
    let code = match home {
        None => {
            shard.groups.request_topic(shard);
            error::COORDINATOR_NOT_AVAILABLE
        }
        Some(p) => match shard
            .txns
            .add_partitions(
                shard,
                body.transactional_id.0.as_str(),
                body.producer_id.0,
                body.producer_epoch,
                &[(OFFSETS_TOPIC.to_string(), p)],
            )
            .await
        {
            Ok(()) => error::NONE,
            Err(code) => crate::txn::fenced_for(code, req.version, 2),
        },
    };
    let resp = AddOffsetsToTxnResponse::default().with_error_code(code);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
