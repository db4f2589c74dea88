//! ListTransactions (key 66): the transactional ids this node coordinates (the ids of the
//! `__transaction_state` partitions its shard leads), filtered by state, producer id and
//! (v1) by how long the open transaction has run. Admin clients ask every node and join
//! the lists, as for ListGroups.
//!
//! Runs on: any shard, answering for its own coordinator (`txn::TxnCoordinator`).
//! Not served: v2's transactional id regex (KIP-1152), so v2 is not advertised.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::groups::group::now_ms;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::shard::Shard;
use crate::txn::TxnState;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListTransactions,
    min_version: 0,
    max_version: 1,
};
/// Every state a transactional id can be in here (Kafka's names).
const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn handle(shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
    let body: ListTransactionsRequest = req.decode()?;
    let mut resp = ListTransactionsResponse::default();
    if shard.txns.parts.loading() {
        resp.error_code = error::COORDINATOR_LOAD_IN_PROGRESS;
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    // Kafka matches state names exactly and returns the names it does not know.
    let mut states = Vec::with_capacity(body.state_filters.len());
    for f in &body.state_filters {
        match STATES.iter().find(|s| s.name() == f.as_str()) {
            Some(s) => states.push(*s),
            None => resp.unknown_state_filters.push(f.clone()),
        }
    }
    // A state filter naming only unknown states matches nothing (Kafka's behaviour).
    let nothing = !body.state_filters.is_empty() && states.is_empty();
    let pids: Vec<i64> = body.producer_id_filters.iter().map(|p| p.0).collect();
    // duration_filter (v1): only transactions open longer than this; -1 means no filter.
    let min_duration_ms = if req.version >= 1 {
        body.duration_filter
    } else {
        -1
    };
    let now = now_ms();
    let txns = shard.txns.txns.borrow();
    let mut ids: Vec<&String> = txns.keys().collect();
    ids.sort();
    for id in ids {
        let m = &txns[id];
        if nothing
            || (!states.is_empty() && !states.contains(&m.state))
            || (!pids.is_empty() && !pids.contains(&m.producer_id))
            || (min_duration_ms >= 0 && (m.start_ms < 0 || now - m.start_ms < min_duration_ms))
        {
            continue;
        }
        resp.transaction_states.push(
            TransactionState::default()
                .with_transactional_id(TransactionalId(str_bytes(id.clone())))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(str_bytes(m.state.name())),
        );
    }
    drop(txns);
    resp.error_code = error::NONE;
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
