//! `ErrorCodes`: the Kafka error codes a typed response carries, top-level and per
//! partition / resource / member, so the broker counts the errors of every API from the
//! response it is about to encode (`handlers::respond`), without decoding anything again.
//!
//! Runs on: any shard. Pure: walks the response structs, calls `f` once per error-code
//! field (0 included: the caller skips it), allocates nothing.

use kafka_protocol::messages::*;

/// The error codes of a response, each passed to `f` (NONE included).
pub trait ErrorCodes {
    fn error_codes(&self, f: &mut impl FnMut(i16));
}

/// Responses with only a top-level `error_code`.
macro_rules! top_level {
    ($($t:ty),* $(,)?) => {$(
        impl ErrorCodes for $t {
            fn error_codes(&self, f: &mut impl FnMut(i16)) {
                f(self.error_code);
            }
        }
    )*};
}

top_level!(
    AddOffsetsToTxnResponse,
    ApiVersionsResponse,
    ConsumerGroupHeartbeatResponse,
    DescribeAclsResponse,
    DescribeClusterResponse,
    EndTxnResponse,
    HeartbeatResponse,
    InitProducerIdResponse,
    JoinGroupResponse,
    ListGroupsResponse,
    ListPartitionReassignmentsResponse,
    ListTransactionsResponse,
    SaslAuthenticateResponse,
    SaslHandshakeResponse,
    SyncGroupResponse,
);

/// Responses that are a list of results, each with an `error_code`.
macro_rules! per_item {
    ($($t:ty => $items:ident),* $(,)?) => {$(
        impl ErrorCodes for $t {
            fn error_codes(&self, f: &mut impl FnMut(i16)) {
                for r in &self.$items {
                    f(r.error_code);
                }
            }
        }
    )*};
}

per_item!(
    AlterConfigsResponse => responses,
    IncrementalAlterConfigsResponse => responses,
    AlterUserScramCredentialsResponse => results,
    ConsumerGroupDescribeResponse => groups,
    CreateAclsResponse => results,
    CreatePartitionsResponse => results,
    CreateTopicsResponse => topics,
    DeleteGroupsResponse => results,
    DeleteTopicsResponse => responses,
    DescribeConfigsResponse => results,
    DescribeGroupsResponse => groups,
    DescribeTransactionsResponse => transaction_states,
);

/// Responses of topics of partitions, each partition with an `error_code`.
macro_rules! per_partition {
    ($($t:ty => $topics:ident . $partitions:ident),* $(,)?) => {$(
        impl ErrorCodes for $t {
            fn error_codes(&self, f: &mut impl FnMut(i16)) {
                for t in &self.$topics {
                    for p in &t.$partitions {
                        f(p.error_code);
                    }
                }
            }
        }
    )*};
}

per_partition!(
    ProduceResponse => responses.partition_responses,
    ListOffsetsResponse => topics.partitions,
    OffsetForLeaderEpochResponse => topics.partitions,
    DeleteRecordsResponse => topics.partitions,
    DescribeProducersResponse => topics.partitions,
    OffsetCommitResponse => topics.partitions,
    TxnOffsetCommitResponse => topics.partitions,
);

impl ErrorCodes for MetadataResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            f(t.error_code);
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for DescribeTopicPartitionsResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        for t in &self.topics {
            f(t.error_code);
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for OffsetDeleteResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for OffsetFetchResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        // v0-7: one group, top-level code and topics; v8+: per group.
        f(self.error_code);
        for t in &self.topics {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
        for g in &self.groups {
            f(g.error_code);
            for t in &g.topics {
                for p in &t.partitions {
                    f(p.error_code);
                }
            }
        }
    }
}

impl ErrorCodes for FindCoordinatorResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        // v0-3: the top-level code; v4+: one per coordinator key.
        f(self.error_code);
        for c in &self.coordinators {
            f(c.error_code);
        }
    }
}

impl ErrorCodes for LeaveGroupResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for m in &self.members {
            f(m.error_code);
        }
    }
}

impl ErrorCodes for DeleteAclsResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        for r in &self.filter_results {
            f(r.error_code);
            for a in &r.matching_acls {
                f(a.error_code);
            }
        }
    }
}

impl ErrorCodes for DescribeLogDirsResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for r in &self.results {
            f(r.error_code);
        }
    }
}

impl ErrorCodes for DescribeUserScramCredentialsResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for r in &self.results {
            f(r.error_code);
        }
    }
}

impl ErrorCodes for AddPartitionsToTxnResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        // v0-3: per topic and partition; v4+: a top-level code and per transaction.
        f(self.error_code);
        for t in &self.results_by_topic_v3_and_below {
            for p in &t.results_by_partition {
                f(p.partition_error_code);
            }
        }
        for x in &self.results_by_transaction {
            for t in &x.topic_results {
                for p in &t.results_by_partition {
                    f(p.partition_error_code);
                }
            }
        }
    }
}

impl ErrorCodes for ElectLeadersResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for t in &self.replica_election_results {
            for p in &t.partition_result {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for DescribeQuorumResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for t in &self.topics {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for AlterPartitionReassignmentsResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        f(self.error_code);
        for t in &self.responses {
            for p in &t.partitions {
                f(p.error_code);
            }
        }
    }
}

impl ErrorCodes for WriteTxnMarkersResponse {
    fn error_codes(&self, f: &mut impl FnMut(i16)) {
        for m in &self.markers {
            for t in &m.topics {
                for p in &t.partitions {
                    f(p.error_code);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(r: &impl ErrorCodes) -> Vec<i16> {
        let mut v = Vec::new();
        r.error_codes(&mut |c| v.push(c));
        v
    }

    // Every level of a nested response is visited: top-level, topic and partition codes
    // of Metadata; per-partition codes of Produce; both layouts of OffsetFetch.
    #[test]
    fn nested_codes_are_all_visited() {
        let md = MetadataResponse::default().with_topics(vec![
            metadata_response::MetadataResponseTopic::default()
                .with_error_code(3)
                .with_partitions(vec![
                    metadata_response::MetadataResponsePartition::default().with_error_code(5),
                    metadata_response::MetadataResponsePartition::default(),
                ]),
        ]);
        assert_eq!(codes(&md), vec![0, 3, 5, 0]);
        let produce = ProduceResponse::default().with_responses(vec![
            produce_response::TopicProduceResponse::default().with_partition_responses(vec![
                produce_response::PartitionProduceResponse::default().with_error_code(6),
                produce_response::PartitionProduceResponse::default().with_error_code(10),
            ]),
        ]);
        assert_eq!(codes(&produce), vec![6, 10]);
        let of = OffsetFetchResponse::default()
            .with_error_code(16)
            .with_groups(vec![
                offset_fetch_response::OffsetFetchResponseGroup::default()
                    .with_error_code(69)
                    .with_topics(vec![
                        offset_fetch_response::OffsetFetchResponseTopics::default()
                            .with_partitions(vec![
                                offset_fetch_response::OffsetFetchResponsePartitions::default()
                                    .with_error_code(3),
                            ]),
                    ]),
            ]);
        assert_eq!(codes(&of), vec![16, 69, 3]);
    }
}
