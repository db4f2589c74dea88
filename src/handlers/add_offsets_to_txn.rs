//! AddOffsetsToTxn (key 25): the group's `__consumer_offsets` partition joins the open
//! transaction, so the transaction's TxnOffsetCommits get its marker.
//!
//! Runs on: the shard coordinating the transactional id (`txn`); elsewhere
//! NOT_COORDINATOR. Asks for the offsets topic (COORDINATOR_NOT_AVAILABLE meanwhile, the
//! client retries) when no group was ever used. Under `--authorizer`, as Kafka: WRITE on
//! the transactional id (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED), then READ on the
//! group (else GROUP_AUTHORIZATION_FAILED).

use std::rc::Rc;

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, ApiKey};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::groups::OFFSETS_TOPIC;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddOffsetsToTxn,
    min_version: 0,
    max_version: 3,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: AddOffsetsToTxnRequest = req.decode()?;
    let home = crate::groups::home(&shard.meta(), body.group_id.0.as_str()).map(|(p, _)| p);
    let txn_id = body.transactional_id.0.as_str();
    let code = match home {
        _ if !session.may(shard, op::WRITE, resource::TRANSACTIONAL_ID, txn_id) => {
            error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED
        }
        _ if !session.may(shard, op::READ, resource::GROUP, body.group_id.0.as_str()) => {
            error::GROUP_AUTHORIZATION_FAILED
        }
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
