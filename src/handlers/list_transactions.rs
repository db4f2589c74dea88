//! ListTransactions (key 66): the transactional ids this node coordinates (the ids of the
//! `__transaction_state` partitions its shard leads), filtered by state, producer id,
//! (v1, KIP-994) how long the open transaction has run and (v2, KIP-1152) a regular
//! expression on the id. Admin clients ask every node and join the lists, as for
//! ListGroups.
//!
//! Runs on: any shard, answering for its own coordinator (`txn::TxnCoordinator`).
//! Under `--authorizer` only the ids the principal may DESCRIBE are listed, as Kafka.
//! The pattern is found anywhere in the id (Java's `Matcher.find`), in the `regex`
//! crate's syntax (RE2's, as Kafka's RE2J patterns); one that does not compile, or compiles
//! past `PATTERN_COMPILED_MAX_BYTES`, is INVALID_REGULAR_EXPRESSION.

use std::rc::Rc;

use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ApiKey, ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::resource;
use crate::groups::group::now_ms;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;
use crate::txn::TxnState;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ListTransactions,
    min_version: 0,
    max_version: 2,
};
/// Kafka's INVALID_REGULAR_EXPRESSION.
const INVALID_REGULAR_EXPRESSION: i16 = 128;
/// Memory one compiled id pattern may take (the regex crate's size limit).
const PATTERN_COMPILED_MAX_BYTES: usize = 1 << 20;
/// Every state a transactional id can be in here (Kafka's names).
const STATES: [TxnState; 6] = [
    TxnState::Empty,
    TxnState::Ongoing,
    TxnState::PrepareCommit,
    TxnState::PrepareAbort,
    TxnState::CompleteCommit,
    TxnState::CompleteAbort,
];

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ListTransactionsRequest = req.decode()?;
    let mut resp = ListTransactionsResponse::default();
    // transactional_id_pattern (v2): null or empty lists every id.
    let pattern = match body
        .transactional_id_pattern
        .as_ref()
        .filter(|p| req.version >= 2 && !p.is_empty())
    {
        None => None,
        Some(p) => match regex::RegexBuilder::new(p.as_str())
            .size_limit(PATTERN_COMPILED_MAX_BYTES)
            .build()
        {
            Ok(r) => Some(r),
            Err(_) => {
                resp.error_code = INVALID_REGULAR_EXPRESSION;
                return Ok(Reply::Frame(respond(shard, &req, &resp)?));
            }
        },
    };
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
            || pattern.as_ref().is_some_and(|p| !p.is_match(id))
            || !session.may(shard, op::DESCRIBE, resource::TRANSACTIONAL_ID, id)
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
