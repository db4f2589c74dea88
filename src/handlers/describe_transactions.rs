//! DescribeTransactions (key 65): the coordinator's state of transactional ids: state,
//! producer id and epoch, timeout, start time of the open transaction and its partitions.
//!
//! Runs on: the shard coordinating each id (`txn::TxnCoordinator`); other nodes answer
//! NOT_COORDINATOR for it, a coordinator still loading COORDINATOR_LOAD_IN_PROGRESS, and a
//! coordinator that does not know the id TRANSACTIONAL_ID_NOT_FOUND, as Kafka. Under
//! `--authorizer` an id the principal may not DESCRIBE is
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED.

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    ApiKey, DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeTransactions,
    min_version: 0,
    max_version: 0,
};

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeTransactionsRequest = req.decode()?;
    let mut states = Vec::with_capacity(body.transactional_ids.len());
    for id in body.transactional_ids {
        let out = TransactionState::default().with_transactional_id(id.clone());
        if !session.may(
            shard,
            op::DESCRIBE,
            resource::TRANSACTIONAL_ID,
            id.0.as_str(),
        ) {
            states.push(out.with_error_code(error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED));
            continue;
        }
        let code = shard.txns.parts.check(shard, id.0.as_str());
        if code != error::NONE {
            states.push(out.with_error_code(code));
            continue;
        }
        let txns = shard.txns.txns.borrow();
        let Some(m) = txns.get(id.0.as_str()) else {
            states.push(out.with_error_code(error::TRANSACTIONAL_ID_NOT_FOUND));
            continue;
        };
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in &m.partitions {
            topics.entry(t.as_str()).or_default().push(*p);
        }
        states.push(
            out.with_error_code(error::NONE)
                .with_transaction_state(str_bytes(m.state.name()))
                .with_transaction_timeout_ms(m.timeout_ms)
                .with_transaction_start_time_ms(m.start_ms)
                .with_producer_id(ProducerId(m.producer_id))
                .with_producer_epoch(m.producer_epoch)
                .with_topics(
                    topics
                        .into_iter()
                        .map(|(t, ps)| {
                            TopicData::default()
                                .with_topic(TopicName(str_bytes(t)))
                                .with_partitions(ps)
                        })
                        .collect(),
                ),
        );
    }
    let resp = DescribeTransactionsResponse::default().with_transaction_states(states);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
