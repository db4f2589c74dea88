//! AddPartitionsToTxn (key 24). v0-3, the producer's form: partitions join the open
//! transaction of a transactional id. v4-5, the brokers' batched form (KIP-890): several
//! transactions in one request, each either added as v3 does or, with VerifyOnly, only
//! checked (`txn::TxnCoordinator::verify`: is each partition in the open transaction?), which
//! is what a partition leader asks before it appends a producer's first transactional batch.
//!
//! Runs on: the shard coordinating each transactional id (`txn`); elsewhere
//! NOT_COORDINATOR. Under `--authorizer`, v0-3 need WRITE on the transactional id
//! (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED for every partition) and WRITE on each
//! partition's topic (TOPIC_AUTHORIZATION_FAILED); v4+ need CLUSTER_ACTION (else the
//! top-level CLUSTER_AUTHORIZATION_FAILED), as Kafka. Partitions of unknown topics get
//! UNKNOWN_TOPIC_OR_PARTITION, and when any partition is refused the others get
//! OPERATION_NOT_ATTEMPTED, as Kafka.

use std::rc::Rc;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, ApiKey};

use super::{ApiSpec, Reply, respond};
use crate::acl::resource;
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;
use crate::txn::OPERATION_NOT_ATTEMPTED;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::AddPartitionsToTxn,
    min_version: 0,
    max_version: 5,
};
/// First version of the brokers' batched form.
const BATCHED_VERSION_MIN: i16 = 4;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: AddPartitionsToTxnRequest = req.decode()?;
    if req.version >= BATCHED_VERSION_MIN {
        return batched(shard, session, &req, body).await;
    }
    let txn_id = body.v3_and_below_transactional_id.0.as_str();
    let codes = one_txn(
        shard,
        session,
        txn_id,
        body.v3_and_below_producer_id.0,
        body.v3_and_below_producer_epoch,
        &body.v3_and_below_topics,
        false,
        true,
    )
    .await;
    let results = results(&body.v3_and_below_topics, codes, req.version);
    let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// v4+: every transaction of the request, answered in the same order.
async fn batched(
    shard: &Rc<Shard>,
    session: &Session,
    req: &RequestFrame,
    body: AddPartitionsToTxnRequest,
) -> Result<Reply, ProtocolError> {
    let mut resp = AddPartitionsToTxnResponse::default();
    if !session.may_cluster(shard, op::CLUSTER_ACTION) {
        resp.error_code = error::CLUSTER_AUTHORIZATION_FAILED;
        return Ok(Reply::Frame(respond(shard, req, &resp)?));
    }
    for t in &body.transactions {
        let codes = one_txn(
            shard,
            session,
            t.transactional_id.0.as_str(),
            t.producer_id.0,
            t.producer_epoch,
            &t.topics,
            t.verify_only,
            false,
        )
        .await;
        resp.results_by_transaction.push(
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id.clone())
                .with_topic_results(results(&t.topics, codes, req.version)),
        );
    }
    Ok(Reply::Frame(respond(shard, req, &resp)?))
}

/// One transaction's partitions: a code per partition in request order.
#[allow(clippy::too_many_arguments)]
async fn one_txn(
    shard: &Rc<Shard>,
    session: &Session,
    txn_id: &str,
    producer_id: i64,
    epoch: i16,
    topics: &[AddPartitionsToTxnTopic],
    verify_only: bool,
    authorize: bool,
) -> Vec<i16> {
    let listed: Vec<(String, i32)> = topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.0.to_string(), *p)))
        .collect();
    if verify_only {
        return shard
            .txns
            .verify(shard, txn_id, producer_id, epoch, &listed);
    }
    if authorize && !session.may(shard, op::WRITE, resource::TRANSACTIONAL_ID, txn_id) {
        return vec![error::TRANSACTIONAL_ID_AUTHORIZATION_FAILED; listed.len()];
    }
    // Refusals per partition first (Kafka: unauthorized topics, then unknown ones).
    let early: Vec<Option<i16>> = {
        let meta = shard.meta();
        listed
            .iter()
            .map(|(t, p)| {
                if authorize && !session.may(shard, op::WRITE, resource::TOPIC, t) {
                    Some(error::TOPIC_AUTHORIZATION_FAILED)
                } else if meta.partition(t, *p).is_none() {
                    Some(error::UNKNOWN_TOPIC_OR_PARTITION)
                } else {
                    None
                }
            })
            .collect()
    };
    if early.iter().any(Option::is_some) {
        return early
            .into_iter()
            .map(|c| c.unwrap_or(OPERATION_NOT_ATTEMPTED))
            .collect();
    }
    let mut partitions = listed.clone();
    partitions.sort();
    partitions.dedup();
    let code = match shard
        .txns
        .add_partitions(shard, txn_id, producer_id, epoch, &partitions)
        .await
    {
        Ok(()) => error::NONE,
        Err(code) => code,
    };
    vec![code; listed.len()]
}

/// The per-topic results of `topics` from one code per partition (request order).
fn results(
    topics: &[AddPartitionsToTxnTopic],
    codes: Vec<i16>,
    version: i16,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let mut codes = codes.into_iter();
    topics
        .iter()
        .map(|t| {
            AddPartitionsToTxnTopicResult::default()
                .with_name(t.name.clone())
                .with_results_by_partition(
                    t.partitions
                        .iter()
                        .map(|p| {
                            let code = codes.next().unwrap_or(error::UNKNOWN_SERVER_ERROR);
                            AddPartitionsToTxnPartitionResult::default()
                                .with_partition_index(*p)
                                .with_partition_error_code(crate::txn::fenced_for(code, version, 2))
                        })
                        .collect(),
                )
        })
        .collect()
}
