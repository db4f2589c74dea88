//! Fuzzing on the stable toolchain: an in-process, seeded, structure-aware mutation fuzzer
//! with outcome feedback, run as ordinary tests.
//!
//! Why not libFuzzer or AFL: cargo-fuzz needs nightly `-Z` flags (RUSTC_BOOTSTRAP=1 would
//! fake them) and cargo-afl builds AFL++ from source; neither is installed here, building
//! either costs minutes on a 2-core machine shared with other builds, and neither runs
//! inside `cargo nextest`, where the test command needs a bounded run of every target.
//! What this loses is coverage guidance; what stands in for it: seeds are valid frames of
//! every API and version the broker accepts (encoded by the kafka-protocol crate, as
//! clients send them), mutations know the wire's shapes (big-endian lengths and counts,
//! varints, truncation, splicing between seeds), and an input whose outcome (Ok, or its
//! error text with numbers blanked) is new joins the corpus, so error paths that need two
//! steps are reached.
//!
//! Targets (each what the broker runs on untrusted bytes, with no shard):
//! - `frame`: `check_frame_len` + `decode_request` (header) + `handlers::decode_only`
//!   (every body decoder, old-format Produce, ApiVersions' unknown-version answer, and the
//!   record batch validation of every Produce partition);
//! - `batches`: `shards::batch::validate_each` on record batch lists, plus the invariants of
//!   what it accepts, and for each accepted batch what ListOffsets by timestamp later does
//!   with it (bounded decompression, the record walk);
//! - `recovery`: a segment file of mutated batches opened by `shards::Store` (the recovery
//!   scan), which must recover a prefix of the file made of whole valid batches and then
//!   take appends;
//! - `subscription`: the consumer protocol metadata (ConsumerProtocolSubscription) the
//!   group coordinator parses out of JoinGroup.
//!
//! Each target runs FUZZ_SECONDS (default 2) or FUZZ_ITERATIONS_MAX inputs, whichever ends
//! first, from FUZZ_SEED (default fixed, so the test command is reproducible). A panic is
//! caught, the input written to target/fuzz-crashes/ and the test fails naming it. Longer
//! runs: `FUZZ_SECONDS=300 FUZZ_SEED=$RANDOM cargo nextest run --test fuzz --no-capture`.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use osprey::handlers::{all_specs, decode_only};
use osprey::protocol::{check_frame_len, decode_request};
use shards::batch::build::{self, ProducerFields};

const ITERATIONS_MAX: u64 = 50_000_000;
const CORPUS_MAX: usize = 8192;
const INPUT_MAX_BYTES: usize = 64 << 10;

fn seconds() -> f64 {
    std::env::var("FUZZ_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0)
}

fn seed() -> u64 {
    std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x05b2e7)
}

/// xorshift64*: small, fast, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const INTERESTING_32: &[i32] = &[
    0,
    1,
    -1,
    2,
    7,
    8,
    61,
    127,
    128,
    255,
    256,
    4096,
    65535,
    65536,
    0x7fff,
    0x8000,
    i32::MAX,
    i32::MIN,
    i32::MAX - 1,
    100 << 20,
    (100 << 20) + 1,
    1 << 30,
];

/// One to four stacked mutations of `input`, shaped after the wire: big-endian integers
/// (lengths, counts, offsets), varints, truncation, insertion, deletion, duplication, and
/// splicing with another corpus entry.
fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let len = v.len();
        match rng.below(11) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = [0u8, 0xff, 0x7f, 0x80, 1, 0xfe][rng.below(6)];
            }
            2 if len >= 4 => {
                let i = rng.below(len - 3);
                let x = INTERESTING_32[rng.below(INTERESTING_32.len())];
                v[i..i + 4].copy_from_slice(&x.to_be_bytes());
            }
            3 if len >= 2 => {
                let i = rng.below(len - 1);
                let x = INTERESTING_32[rng.below(INTERESTING_32.len())] as i16;
                v[i..i + 2].copy_from_slice(&x.to_be_bytes());
            }
            4 if len >= 4 => {
                // Add or subtract a little from a big-endian i32 (a length off by some).
                let i = rng.below(len - 3);
                let x = i32::from_be_bytes(v[i..i + 4].try_into().unwrap());
                let d = rng.below(33) as i32 - 16;
                v[i..i + 4].copy_from_slice(&x.wrapping_add(d).to_be_bytes());
            }
            5 if len > 0 => v.truncate(rng.below(len)),
            6 => {
                let i = rng.below(len + 1);
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                v.splice(i..i, bytes);
            }
            7 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(64));
                v.drain(i..i + n);
            }
            8 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(256));
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            9 if !corpus.is_empty() => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len() + 1);
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            10 if len > 0 => {
                // An unsigned varint of 1-10 bytes (compact lengths and counts), extreme
                // values included.
                let i = rng.below(len);
                let n = 1 + rng.below(10);
                let mut bytes: Vec<u8> = (0..n).map(|_| 0x80 | rng.next() as u8).collect();
                if rng.below(2) == 0 {
                    *bytes.last_mut().unwrap() &= 0x7f;
                }
                let end = (i + n).min(len);
                v.splice(i..end, bytes);
            }
            _ => {}
        }
    }
    v.truncate(INPUT_MAX_BYTES);
    v
}

/// A target's outcome with numbers blanked: a new one means the input reached a path the
/// corpus did not.
fn signature(outcome: &str) -> String {
    // Words holding a digit (offsets, lengths, CRCs, versions) blanked: finer detail would
    // make every input "new" and flood the corpus with look-alikes.
    outcome
        .split_whitespace()
        .map(|w| {
            if w.bytes().any(|b| b.is_ascii_digit()) {
                "#"
            } else {
                w
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(120)
        .collect()
}

struct Figures {
    executions: u64,
    corpus: usize,
    outcomes: usize,
}

/// The corpus, the feedback and the bounds of one target's run; the caller runs the target
/// on each `next()` input and reports through `outcome` or `crashed`.
struct Fuzzer {
    name: &'static str,
    rng: Rng,
    corpus: Vec<Vec<u8>>,
    queue: Vec<Vec<u8>>,
    seen: HashSet<String>,
    started: Instant,
    budget: Duration,
    executions: u64,
}

impl Fuzzer {
    fn new(name: &'static str, seeds: Vec<Vec<u8>>) -> Fuzzer {
        assert!(!seeds.is_empty());
        Fuzzer {
            name,
            rng: Rng::new(seed() ^ crc32c::crc32c(name.as_bytes()) as u64),
            // Seeds first, unmutated: they must pass too.
            queue: seeds.clone(),
            corpus: seeds,
            seen: HashSet::new(),
            started: Instant::now(),
            budget: Duration::from_secs_f64(seconds()),
            executions: 0,
        }
    }

    fn next(&mut self) -> Option<Vec<u8>> {
        let more = self.started.elapsed() < self.budget || !self.queue.is_empty();
        if self.executions >= ITERATIONS_MAX || !more {
            return None;
        }
        self.executions += 1;
        Some(match self.queue.pop() {
            Some(s) => s,
            None => {
                let base = &self.corpus[self.rng.below(self.corpus.len())];
                mutate(&mut self.rng, base, &self.corpus)
            }
        })
    }

    fn outcome(&mut self, input: Vec<u8>, outcome: &str) {
        if self.seen.insert(signature(outcome)) && self.corpus.len() < CORPUS_MAX {
            self.corpus.push(input);
        }
    }

    fn crashed(&self, input: &[u8]) -> ! {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("../fuzz-crashes");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("{}-{:08x}.bin", self.name, crc32c::crc32c(input)));
        let _ = std::fs::write(&path, input);
        panic!(
            "fuzz target {} panicked after {} executions (seed {}); input saved to {}: {}",
            self.name,
            self.executions,
            seed(),
            path.display(),
            hex(&input[..input.len().min(256)])
        );
    }

    fn finish(self) -> Figures {
        let secs = self.started.elapsed().as_secs_f64();
        let f = Figures {
            executions: self.executions,
            corpus: self.corpus.len(),
            outcomes: self.seen.len(),
        };
        eprintln!(
            "fuzz {}: {} executions in {secs:.1} s ({:.0}/s), corpus {}, distinct outcomes {}, no crash",
            self.name,
            f.executions,
            f.executions as f64 / secs,
            f.corpus,
            f.outcomes
        );
        f
    }
}

/// Runs a synchronous `target` for the configured time; fails the test on the first input
/// that makes it panic, after saving the input.
fn fuzz(
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    mut target: impl FnMut(&[u8]) -> String,
) -> Figures {
    let mut fz = Fuzzer::new(name, seeds);
    while let Some(input) = fz.next() {
        match std::panic::catch_unwind(AssertUnwindSafe(|| target(&input))) {
            Ok(outcome) => fz.outcome(input, &outcome),
            Err(_) => fz.crashed(&input),
        }
    }
    fz.finish()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn tname(v: &str) -> TopicName {
    TopicName(s(v))
}

/// A record batch as clients send it (kafka-protocol's encoder), optionally compressed and
/// from an idempotent producer.
fn client_batch(n: usize, compression: Compression, producer_id: i64) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch: if producer_id < 0 { -1 } else { 0 },
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: if producer_id < 0 { -1 } else { i as i32 },
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key{i}"))),
            value: Some(Bytes::from(vec![b'v'; 20 + i])),
            headers: [(s("h"), Some(Bytes::from_static(b"x")))]
                .into_iter()
                .collect(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .unwrap();
    buf.freeze()
}

/// Request frames (after the length prefix) of `body` at every version the broker accepts
/// for `key`, and one version beyond on each side.
fn frames<T: Encodable>(out: &mut Vec<Vec<u8>>, key: ApiKey, body: &T) {
    let spec = all_specs().find(|s| s.key == key).expect("served API");
    for version in spec.min_version - 1..=spec.max_version + 1 {
        let mut buf = BytesMut::new();
        let header = RequestHeader::default()
            .with_request_api_key(key as i16)
            .with_request_api_version(version)
            .with_correlation_id(42)
            .with_client_id(Some(s("fuzz-client")));
        let hv = key.request_header_version(version.max(0));
        if header.encode(&mut buf, hv).is_err() {
            continue;
        }
        if body.encode(&mut buf, version.max(0)).is_err() {
            continue;
        }
        out.push(buf.to_vec());
    }
}

fn frame_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let records = client_batch(3, Compression::None, 7);
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(1000)
        .with_topic_data(vec![
            produce_request::TopicProduceData::default()
                .with_name(tname("t"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(0)
                        .with_records(Some(records.clone())),
                ]),
        ]);
    frames(&mut out, ApiKey::Produce, &produce);
    frames(
        &mut out,
        ApiKey::Fetch,
        &FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![
                fetch_request::FetchTopic::default()
                    .with_topic(tname("t"))
                    .with_topic_id(uuid::Uuid::from_bytes([3; 16]))
                    .with_partitions(vec![
                        fetch_request::FetchPartition::default()
                            .with_partition(0)
                            .with_fetch_offset(5)
                            .with_partition_max_bytes(1 << 20),
                    ]),
            ]),
    );
    frames(
        &mut out,
        ApiKey::ListOffsets,
        &ListOffsetsRequest::default().with_topics(vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(tname("t"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(0)
                        .with_timestamp(-1),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::Metadata,
        &MetadataRequest::default().with_topics(Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(tname("t"))),
        ])),
    );
    frames(
        &mut out,
        ApiKey::ApiVersions,
        &ApiVersionsRequest::default()
            .with_client_software_name(s("fuzz"))
            .with_client_software_version(s("1")),
    );
    frames(
        &mut out,
        ApiKey::CreateTopics,
        &CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(tname("t"))
                .with_num_partitions(3)
                .with_replication_factor(1)
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("1000"))),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DeleteTopics,
        &DeleteTopicsRequest::default().with_topic_names(vec![tname("t")]),
    );
    frames(
        &mut out,
        ApiKey::DeleteTopics,
        &DeleteTopicsRequest::default().with_topics(vec![
            delete_topics_request::DeleteTopicState::default().with_name(Some(tname("t"))),
        ]),
    );
    frames(
        &mut out,
        ApiKey::InitProducerId,
        &InitProducerIdRequest::default(),
    );
    frames(
        &mut out,
        ApiKey::DescribeConfigs,
        &DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configuration_keys(Some(vec![s("retention.ms")])),
        ]),
    );
    frames(
        &mut out,
        ApiKey::CreatePartitions,
        &CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(tname("t"))
                .with_count(4),
        ]),
    );
    frames(
        &mut out,
        ApiKey::OffsetForLeaderEpoch,
        &OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(tname("t"))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_leader_epoch(0),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeCluster,
        &DescribeClusterRequest::default(),
    );
    frames(
        &mut out,
        ApiKey::AlterConfigs,
        &AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("5"))),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::IncrementalAlterConfigs,
        &IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(s("retention.ms"))
                        .with_value(Some(s("5"))),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DeleteRecords,
        &DeleteRecordsRequest::default().with_topics(vec![
            delete_records_request::DeleteRecordsTopic::default()
                .with_name(tname("t"))
                .with_partitions(vec![
                    delete_records_request::DeleteRecordsPartition::default().with_offset(3),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeLogDirs,
        &DescribeLogDirsRequest::default(),
    );
    frames(
        &mut out,
        ApiKey::OffsetCommit,
        &OffsetCommitRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_generation_id_or_member_epoch(1)
            .with_member_id(s("m"))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(tname("t"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(10)
                            .with_committed_metadata(Some(s("meta"))),
                    ]),
            ]),
    );
    // Fields of some versions only: one body per version range (a field set outside its
    // versions does not encode).
    frames(
        &mut out,
        ApiKey::OffsetFetch,
        &OffsetFetchRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(tname("t"))
                    .with_partition_indexes(vec![0, 1]),
            ])),
    );
    frames(
        &mut out,
        ApiKey::OffsetFetch,
        &OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(s("g")))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(tname("t"))
                        .with_partition_indexes(vec![0]),
                ])),
        ]),
    );
    frames(
        &mut out,
        ApiKey::FindCoordinator,
        &FindCoordinatorRequest::default().with_key(s("g")),
    );
    frames(
        &mut out,
        ApiKey::FindCoordinator,
        &FindCoordinatorRequest::default().with_coordinator_keys(vec![s("g")]),
    );
    frames(
        &mut out,
        ApiKey::JoinGroup,
        &JoinGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_session_timeout_ms(10_000)
            .with_member_id(s(""))
            .with_protocol_type(s("consumer"))
            .with_protocols(
                [join_group_request::JoinGroupRequestProtocol::default()
                    .with_name(s("range"))
                    .with_metadata(Bytes::from_static(&[
                        0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 0,
                    ]))]
                .into_iter()
                .collect(),
            ),
    );
    frames(
        &mut out,
        ApiKey::Heartbeat,
        &HeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m")),
    );
    frames(
        &mut out,
        ApiKey::LeaveGroup,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m")),
    );
    frames(
        &mut out,
        ApiKey::LeaveGroup,
        &LeaveGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_members(vec![
                leave_group_request::MemberIdentity::default().with_member_id(s("m")),
            ]),
    );
    frames(
        &mut out,
        ApiKey::SyncGroup,
        &SyncGroupRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"))
            .with_assignments(vec![
                sync_group_request::SyncGroupRequestAssignment::default()
                    .with_member_id(s("m"))
                    .with_assignment(Bytes::from_static(&[0, 1, 0, 0, 0, 0])),
            ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeGroups,
        &DescribeGroupsRequest::default().with_groups(vec![GroupId(s("g"))]),
    );
    frames(&mut out, ApiKey::ListGroups, &ListGroupsRequest::default());
    frames(
        &mut out,
        ApiKey::DeleteGroups,
        &DeleteGroupsRequest::default().with_groups_names(vec![GroupId(s("g"))]),
    );
    frames(
        &mut out,
        ApiKey::OffsetDelete,
        &OffsetDeleteRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_topics(
                [offset_delete_request::OffsetDeleteRequestTopic::default()
                    .with_name(tname("t"))
                    .with_partitions(vec![
                        offset_delete_request::OffsetDeleteRequestPartition::default(),
                    ])]
                .into_iter()
                .collect(),
            ),
    );
    // The consumer group protocol (KIP-848).
    frames(
        &mut out,
        ApiKey::ConsumerGroupHeartbeat,
        &ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(s("g")))
            .with_member_id(s("m"))
            .with_rebalance_timeout_ms(30_000)
            .with_subscribed_topic_names(Some(vec![tname("t")]))
            .with_server_assignor(Some(s("uniform")))
            .with_topic_partitions(Some(vec![
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_partitions(vec![0, 1]),
            ])),
    );
    frames(
        &mut out,
        ApiKey::ConsumerGroupDescribe,
        &ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(s("g"))]),
    );
    // Transactions.
    frames(
        &mut out,
        ApiKey::AddPartitionsToTxn,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TransactionalId(s("tx")))
            .with_v3_and_below_producer_id(ProducerId(7))
            .with_v3_and_below_topics(vec![
                add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                    .with_name(tname("t"))
                    .with_partitions(vec![0, 1]),
            ]),
    );
    // The brokers' batched form (v4+, KIP-890 verification).
    frames(
        &mut out,
        ApiKey::AddPartitionsToTxn,
        &AddPartitionsToTxnRequest::default().with_transactions(vec![
            add_partitions_to_txn_request::AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TransactionalId(s("tx")))
                .with_producer_id(ProducerId(7))
                .with_verify_only(true)
                .with_topics(vec![
                    add_partitions_to_txn_request::AddPartitionsToTxnTopic::default()
                        .with_name(tname("t"))
                        .with_partitions(vec![0, 1]),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::AddOffsetsToTxn,
        &AddOffsetsToTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(7))
            .with_group_id(GroupId(s("g"))),
    );
    frames(
        &mut out,
        ApiKey::EndTxn,
        &EndTxnRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_producer_id(ProducerId(7))
            .with_committed(true),
    );
    frames(
        &mut out,
        ApiKey::TxnOffsetCommit,
        &TxnOffsetCommitRequest::default()
            .with_transactional_id(TransactionalId(s("tx")))
            .with_group_id(GroupId(s("g")))
            .with_producer_id(ProducerId(7))
            .with_topics(vec![
                txn_offset_commit_request::TxnOffsetCommitRequestTopic::default()
                    .with_name(tname("t"))
                    .with_partitions(vec![
                        txn_offset_commit_request::TxnOffsetCommitRequestPartition::default()
                            .with_committed_offset(5),
                    ]),
            ]),
    );
    frames(
        &mut out,
        ApiKey::WriteTxnMarkers,
        &WriteTxnMarkersRequest::default().with_markers(vec![
            write_txn_markers_request::WritableTxnMarker::default()
                .with_producer_id(ProducerId(7))
                .with_transaction_result(true)
                .with_topics(vec![
                    write_txn_markers_request::WritableTxnMarkerTopic::default()
                        .with_name(tname("t"))
                        .with_partition_indexes(vec![0]),
                ]),
        ]),
    );
    // Transaction and topic admin APIs.
    frames(
        &mut out,
        ApiKey::DescribeProducers,
        &DescribeProducersRequest::default().with_topics(vec![
            describe_producers_request::TopicRequest::default()
                .with_name(tname("t"))
                .with_partition_indexes(vec![0]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeTransactions,
        &DescribeTransactionsRequest::default()
            .with_transactional_ids(vec![TransactionalId(s("tx"))]),
    );
    frames(
        &mut out,
        ApiKey::ListTransactions,
        &ListTransactionsRequest::default().with_state_filters(vec![s("Ongoing")]),
    );
    frames(
        &mut out,
        ApiKey::ListTransactions,
        &ListTransactionsRequest::default()
            .with_duration_filter(1000)
            .with_transactional_id_pattern(Some(s("tx-.*"))),
    );
    frames(
        &mut out,
        ApiKey::DescribeTopicPartitions,
        &DescribeTopicPartitionsRequest::default()
            .with_topics(vec![
                describe_topic_partitions_request::TopicRequest::default().with_name(tname("t")),
            ])
            .with_response_partition_limit(10),
    );
    frames(
        &mut out,
        ApiKey::ElectLeaders,
        &ElectLeadersRequest::default()
            .with_election_type(1)
            .with_topic_partitions(Some(vec![
                elect_leaders_request::TopicPartitions::default()
                    .with_topic(tname("t"))
                    .with_partitions(vec![0, 7]),
            ])),
    );
    frames(
        &mut out,
        ApiKey::DescribeQuorum,
        &DescribeQuorumRequest::default().with_topics(vec![
            describe_quorum_request::TopicData::default()
                .with_topic_name(tname("__cluster_metadata"))
                .with_partitions(vec![describe_quorum_request::PartitionData::default()]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::AlterPartitionReassignments,
        &AlterPartitionReassignmentsRequest::default().with_topics(vec![
            alter_partition_reassignments_request::ReassignableTopic::default()
                .with_name(tname("t"))
                .with_partitions(vec![
                    alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_replicas(Some(vec![BrokerId(0), BrokerId(1)])),
                    alter_partition_reassignments_request::ReassignablePartition::default()
                        .with_partition_index(1)
                        .with_replicas(None),
                ]),
        ]),
    );
    frames(
        &mut out,
        ApiKey::ListPartitionReassignments,
        &ListPartitionReassignmentsRequest::default().with_topics(Some(vec![
            list_partition_reassignments_request::ListPartitionReassignmentsTopics::default()
                .with_name(tname("t"))
                .with_partition_indexes(vec![0, 1]),
        ])),
    );
    // Security.
    frames(
        &mut out,
        ApiKey::SaslHandshake,
        &SaslHandshakeRequest::default().with_mechanism(s("SCRAM-SHA-256")),
    );
    frames(
        &mut out,
        ApiKey::SaslAuthenticate,
        &SaslAuthenticateRequest::default()
            .with_auth_bytes(Bytes::from_static(b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL")),
    );
    frames(
        &mut out,
        ApiKey::CreateAcls,
        &CreateAclsRequest::default().with_creations(vec![
            create_acls_request::AclCreation::default()
                .with_resource_type(2)
                .with_resource_name(s("t"))
                .with_resource_pattern_type(3)
                .with_principal(s("User:alice"))
                .with_host(s("*"))
                .with_operation(3)
                .with_permission_type(3),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeAcls,
        &DescribeAclsRequest::default()
            .with_resource_type_filter(1)
            .with_pattern_type_filter(1)
            .with_operation(1)
            .with_permission_type(1),
    );
    frames(
        &mut out,
        ApiKey::DeleteAcls,
        &DeleteAclsRequest::default().with_filters(vec![
            delete_acls_request::DeleteAclsFilter::default()
                .with_resource_type_filter(2)
                .with_pattern_type_filter(1)
                .with_operation(1)
                .with_permission_type(1),
        ]),
    );
    frames(
        &mut out,
        ApiKey::DescribeUserScramCredentials,
        &DescribeUserScramCredentialsRequest::default().with_users(Some(vec![
            describe_user_scram_credentials_request::UserName::default().with_name(s("alice")),
        ])),
    );
    frames(
        &mut out,
        ApiKey::AlterUserScramCredentials,
        &AlterUserScramCredentialsRequest::default().with_upsertions(vec![
            alter_user_scram_credentials_request::ScramCredentialUpsertion::default()
                .with_name(s("alice"))
                .with_mechanism(1)
                .with_iterations(4096)
                .with_salt(Bytes::from_static(b"salt"))
                .with_salted_password(Bytes::from_static(&[7; 32])),
        ]),
    );
    out
}

/// The broker's path for one frame: length check (the frame's own length as the prefix),
/// header decode, body decode by its handler's decoder.
fn frame_target(input: &[u8]) -> String {
    let len = match check_frame_len(i32::try_from(input.len()).unwrap_or(i32::MAX)) {
        Ok(l) => l,
        Err(e) => return format!("len: {e}"),
    };
    assert_eq!(len, input.len());
    let req = match decode_request(Bytes::copy_from_slice(input)) {
        Ok(r) => r,
        Err(e) => return format!("header: {e}"),
    };
    match decode_only(&req) {
        Ok(()) => format!("ok {:?} v{}", req.api_key, req.version),
        Err(e) => format!("body: {e}"),
    }
}

fn batch_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for c in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        out.push(client_batch(4, c, -1).to_vec());
        out.push(client_batch(2, c, 9).to_vec());
    }
    let mut two = client_batch(1, Compression::None, -1).to_vec();
    two.extend_from_slice(&client_batch(3, Compression::Snappy, 5));
    out.push(two);
    out.push(build::batch(5, 10, 1_000, ProducerFields::NONE, 7));
    out
}

/// Rewrites the CRC of every batch in `input` (walked by its batchLength fields) so that
/// mutations inside the covered range get past the CRC check and reach what lies behind
/// it; a batch running past the end is left alone.
fn fix_crcs(input: &mut [u8]) {
    use shards::batch::{ATTRIBUTES_OFFSET, CRC_OFFSET, LOG_OVERHEAD_BYTES, compute_crc};
    let mut pos = 0usize;
    while pos + ATTRIBUTES_OFFSET <= input.len() {
        let len = i32::from_be_bytes(input[pos + 8..pos + 12].try_into().unwrap());
        let Some(total) = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_add(LOG_OVERHEAD_BYTES))
            .filter(|t| *t >= ATTRIBUTES_OFFSET && pos + t <= input.len())
        else {
            return;
        };
        let crc = compute_crc(&input[pos..pos + total]);
        input[pos + CRC_OFFSET..pos + CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
        pos += total;
    }
}

/// `batch_target` on the input as mutated and with its CRCs fixed up.
fn batch_target_both(input: &[u8]) -> String {
    let raw = batch_target(input);
    let mut fixed = input.to_vec();
    fix_crcs(&mut fixed);
    format!("{raw} / {}", batch_target(&fixed))
}

/// Produce-path validation; what it accepts must be whole batches that cover the input,
/// each passing the single-batch check on its own.
fn batch_target(input: &[u8]) -> String {
    let mut accepted = Vec::new();
    match shards::batch::validate_each(input, 1 << 20, |v| accepted.push(v)) {
        Ok(n) => {
            assert_eq!(n, accepted.len());
            let total: usize = accepted.iter().map(|v| v.header.total_bytes()).sum();
            assert_eq!(total, input.len(), "accepted batches cover the input");
            let mut pos = 0;
            let mut walked = "";
            for v in &accepted {
                let h =
                    shards::batch::check_one(&input[pos..], pos).expect("accepted batch checks");
                assert_eq!(h.total_bytes(), v.header.total_bytes());
                // What ListOffsets by timestamp later does with a stored batch: decompress
                // its records (bounded) and walk them.
                let start = pos + shards::batch::BATCH_HEADER_BYTES;
                let records = &input[start..pos + h.total_bytes()];
                let plain = match h.compression() {
                    0 => Ok(records.to_vec()),
                    c => osprey::codec::decompress(c, records),
                };
                walked = match plain {
                    Ok(plain) => {
                        match shards::batch::find_record_at_or_after(&h, &plain, i64::MIN, i64::MIN)
                        {
                            Ok(Some(_)) => "found",
                            Ok(None) => "none",
                            Err(_) => "bad records",
                        }
                    }
                    Err(_) => "undecompressable",
                };
                pos += h.total_bytes();
            }
            format!("ok {n} {walked}")
        }
        Err(e) => format!("err {e}"),
    }
}

/// Segment contents: valid batches in offset sequence, as the storage writes them.
fn segment_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for shape in [&[3usize, 1, 5][..], &[1], &[2, 2, 2, 2]] {
        let mut seg = Vec::new();
        let mut next = 0i64;
        for (i, &n) in shape.iter().enumerate() {
            let mut b = build::batch(n, 16 + i * 7, 1_000 + i as i64, ProducerFields::NONE, 3);
            shards::batch::set_base_offset(&mut b, next);
            next += n as i64;
            seg.extend_from_slice(&b);
        }
        out.push(seg);
    }
    out
}

// The frame target: header and every body decoder the broker accepts, with Produce's
// batch validation.
#[test]
fn fuzz_request_frames() {
    let seeds = frame_seeds();
    // Every served API has seeds (at every version the kafka-protocol crate encodes; it
    // has no Produce v0-2, which mutations of v3 frames with the version bytes changed
    // reach).
    for spec in all_specs() {
        let n = seeds
            .iter()
            .filter(|f| i16::from_be_bytes([f[0], f[1]]) == spec.key as i16)
            .count();
        assert!(n > 0, "{:?}: no seed", spec.key);
    }
    let f = fuzz("frame", seeds, frame_target);
    assert!(f.outcomes > 10, "the mutations reached distinct outcomes");
}

#[test]
fn fuzz_record_batches() {
    let f = fuzz("batches", batch_seeds(), batch_target_both);
    assert!(f.outcomes > 5);
}

// The recovery scan: every mutated segment file opens, recovers a prefix of itself made of
// whole valid batches, and takes an append right after.
#[test]
fn fuzz_segment_recovery() {
    let seeds = segment_seeds();
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let root = tmp.path().to_path_buf();
    let result = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            use futures_lite::FutureExt;
            let store = shards::Store::new(shards::StoreConfig::default());
            let mut fz = Fuzzer::new("recovery", seeds);
            let mut n = 0u64;
            while let Some(input) = fz.next() {
                n += 1;
                let dir = root.join(format!("p-{n}"));
                std::fs::create_dir_all(&dir).unwrap();
                // Every other input with its CRCs fixed up: the scan then looks past them.
                let mut input = input;
                if n.is_multiple_of(2) {
                    fix_crcs(&mut input);
                }
                std::fs::write(dir.join(shards::segment_file_name(0)), &input).unwrap();
                let run = AssertUnwindSafe(recover_check(store.clone(), dir, input.clone()));
                match run.catch_unwind().await {
                    Ok(outcome) => fz.outcome(input, &outcome),
                    Err(_) => fz.crashed(&input),
                }
            }
            fz.finish()
        })
        .unwrap()
        .join();
    let f = result.expect("executor");
    assert!(f.outcomes > 1, "the mutations reached distinct outcomes");
}

async fn recover_check(
    store: std::rc::Rc<shards::Store>,
    dir: std::path::PathBuf,
    input: Vec<u8>,
) -> String {
    // Smallest segments: preallocation (zeroing ahead) stays at 64 KiB per open.
    let config = shards::LogConfig {
        segment_bytes: shards::SEGMENT_MIN_BYTES,
        ..shards::LogConfig::default()
    };
    let p = match store.open_partition(dir.clone(), config).await {
        Ok(p) => p,
        Err(e) => return format!("open: {e}"),
    };
    let end = p.log_end_offset();
    let mut got = Vec::new();
    let mut offset = 0;
    for _ in 0..64 {
        if offset >= end {
            break;
        }
        let out = p.read(offset, 1 << 20).await.expect("read recovered log");
        if out.chunks.is_empty() {
            break;
        }
        for c in &out.chunks {
            got.extend_from_slice(c.as_ref());
        }
        let mut pos = 0;
        while pos < got.len() {
            let h = shards::batch::check_one(&got[pos..], pos).expect("recovered batch valid");
            offset = h.last_offset() + 1;
            pos += h.total_bytes();
        }
    }
    assert!(
        input.starts_with(&got),
        "recovered log is a prefix of the file"
    );
    let appended = p
        .append(
            Bytes::from(build::batch(2, 8, 5_000, ProducerFields::NONE, 1)),
            shards::Durability::Written,
        )
        .await;
    let outcome = match appended {
        Ok(info) => {
            assert_eq!(info.base_offset, end, "append continues the recovered log");
            let how = if got.is_empty() {
                "nothing"
            } else if got.len() == input.len() {
                "the whole file"
            } else {
                "a prefix"
            };
            format!("recovered {how}")
        }
        Err(e) => format!("append: {e}"),
    };
    let _ = p.delete().await;
    outcome
}

/// ConsumerProtocolSubscription v0-3 (version prefix, then the body) as clients put it in
/// JoinGroup's protocol metadata.
fn subscription_seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for version in 0..=3i16 {
        let sub = ConsumerProtocolSubscription::default()
            .with_topics(vec![s("orders"), s("payments")])
            .with_user_data(Some(Bytes::from_static(b"ud")))
            .with_owned_partitions(if version >= 1 {
                vec![
                    consumer_protocol_subscription::TopicPartition::default()
                        .with_topic(tname("orders"))
                        .with_partitions(vec![0, 1]),
                ]
            } else {
                Vec::new()
            })
            .with_generation_id(if version >= 2 { 3 } else { -1 })
            .with_rack_id(if version >= 3 { Some(s("r1")) } else { None });
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&version.to_be_bytes());
        sub.encode(&mut buf, version).unwrap();
        out.push(buf.to_vec());
    }
    out
}

/// The consumer protocol metadata the group coordinator parses (the subscribed topics of
/// each member, for DescribeGroups and offset retention); what it returns must come from
/// the input.
fn subscription_target(input: &[u8]) -> String {
    match osprey::groups::group::consumer_subscription_topics(input) {
        Some(topics) => {
            let bytes: usize = topics.iter().map(|t| t.len() + 2).sum();
            assert!(
                bytes + 6 <= input.len().max(6),
                "topics longer than the input"
            );
            format!("ok {}", topics.len().min(3))
        }
        None => "malformed".into(),
    }
}

#[test]
fn fuzz_consumer_protocol_subscriptions() {
    let f = fuzz("subscription", subscription_seeds(), subscription_target);
    assert!(f.outcomes > 1);
}
