//! ElectLeaders (key 43): preferred (move leadership back to each partition's first
//! replica) or unclean (give a leaderless partition any live replica) leader election, as
//! `kafka-leader-election.sh` and the admin clients' `elect_leaders` ask for it.
//!
//! Runs on: any shard; shard 0 proposes the election to the controller quorum
//! (`MetaCommand::ElectLeaders`) and the answer comes once it is committed. Needs ALTER on
//! the cluster (CLUSTER_AUTHORIZATION_FAILED for every partition, and at the top from v1).

use std::rc::Rc;

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ApiKey, ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::{ProtocolError, RequestFrame, acl::op, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::ElectLeaders,
    min_version: 0,
    max_version: 2,
};

/// Kafka's ElectionType: 0 preferred, 1 unclean.
const PREFERRED: i8 = 0;
const UNCLEAN: i8 = 1;

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: ElectLeadersRequest = req.decode()?;
    // v0 has no election type: preferred.
    let election_type = if req.version == 0 {
        PREFERRED
    } else {
        body.election_type
    };
    let asked: Option<Vec<(String, i32)>> = body.topic_partitions.as_ref().map(|tps| {
        tps.iter()
            .flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p)))
            .collect()
    });
    let top_level = |code: i16, message: &str| -> Result<Reply, ProtocolError> {
        let mut resp = ElectLeadersResponse::default().with_error_code(code);
        if let Some(asked) = &asked {
            resp.replica_election_results = group(
                asked
                    .iter()
                    .map(|tp| (tp.clone(), code, Some(message.to_owned())))
                    .collect(),
            );
        }
        Ok(Reply::Frame(respond(shard, &req, &resp)?))
    };
    if !session.may_cluster(shard, op::ALTER) {
        return top_level(
            error::CLUSTER_AUTHORIZATION_FAILED,
            "Cluster authorization failed.",
        );
    }
    if election_type != PREFERRED && election_type != UNCLEAN {
        return top_level(
            error::INVALID_REQUEST,
            &format!("Unknown election type {election_type}"),
        );
    }
    let unclean = election_type == UNCLEAN;
    let answer = shard
        .call(0, {
            let asked = asked.clone();
            move |s| async move { s.controller().elect_leaders(unclean, asked).await }
        })
        .await;
    let results = match answer {
        Ok(Ok(results)) => results,
        Ok(Err(e)) => return top_level(e.code, &e.message),
        Err(e) => return top_level(error::NOT_CONTROLLER, &format!("shard 0 unreachable: {e}")),
    };
    let resp = ElectLeadersResponse::default()
        .with_error_code(error::NONE)
        .with_replica_election_results(group(
            results
                .into_iter()
                .map(|(tp, r)| match r {
                    Ok(()) => (tp, error::NONE, None),
                    Err(e) => (tp, e.code, Some(e.message)),
                })
                .collect(),
        ));
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}

/// Per-partition outcomes grouped by topic in first-seen order.
fn group(outcomes: Vec<((String, i32), i16, Option<String>)>) -> Vec<ReplicaElectionResult> {
    let mut out: Vec<ReplicaElectionResult> = Vec::new();
    for ((topic, partition), code, message) in outcomes {
        let result = PartitionResult::default()
            .with_partition_id(partition)
            .with_error_code(code)
            .with_error_message(message.map(str_bytes));
        match out.iter_mut().find(|r| r.topic.0.as_str() == topic) {
            Some(r) => r.partition_result.push(result),
            None => out.push(
                ReplicaElectionResult::default()
                    .with_topic(TopicName(str_bytes(topic)))
                    .with_partition_result(vec![result]),
            ),
        }
    }
    out
}
