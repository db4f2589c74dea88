//! Fetch responses held in memory are bounded: per connection (a client that pipelines
//! fetches and never reads the answers holds at most FETCH_RESPONSE_BYTES_PER_CONNECTION_MAX)
//! and per shard (response bytes count against the shard's request-memory budget), while a
//! well-behaved client on the same shard keeps being served.
//!
//! How: a topic holds more data than the shard's tail cache, so fetches from offset 0 read
//! from disk into memory of their own. A hostile connection sends 32 pipelined fetches of
//! up to 50 MiB each and reads nothing; the broker's resident memory is measured before and
//! after, and another client produces and fetches meanwhile.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest};
use kafka_protocol::records::Compression;

const BIG_MIB: usize = 48;
const BATCH_BYTES: usize = 512 << 10;
const PIPELINED_FETCHES: usize = 32;
const FETCH_MAX_BYTES: i32 = 50 << 20;
/// Resident memory the hostile client may add: its connection's response bound (64 MiB)
/// plus room for the allocator's and the test's noise.
const RSS_GROWTH_MAX_BYTES: u64 = 160 << 20;
const SERVED_WITHIN: Duration = Duration::from_secs(5);

#[test]
fn pipelined_fetches_that_are_never_read_hold_bounded_memory() {
    let tmp = tmpdir();
    let broker = Broker::start_in(tmp.path(), 1, &["--cache-mib", "16"]);
    assert_eq!(create_topic(&mut broker.connect(), "big", 1, &[]), 0);
    assert_eq!(create_topic(&mut broker.connect(), "small", 1, &[]), 0);
    let mut c = leader_conn(&broker, "big", 0);
    for _ in 0..(BIG_MIB << 20) / BATCH_BYTES {
        let (err, _) = produce_to(
            &mut c,
            "big",
            0,
            1,
            batch(64, BATCH_BYTES / 64 - 40, Compression::None),
        );
        assert_eq!(err, 0);
    }
    // Settle, then the baseline.
    std::thread::sleep(Duration::from_millis(500));
    let rss_before = broker.rss_bytes();

    let mut hostile = leader_conn(&broker, "big", 0);
    let fetch = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_session_epoch(-1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(name("big"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_fetch_offset(0)
                        .with_partition_max_bytes(FETCH_MAX_BYTES)
                        .with_current_leader_epoch(-1)
                        .with_last_fetched_epoch(-1)
                        .with_log_start_offset(-1),
                ]),
        ]);
    for _ in 0..PIPELINED_FETCHES {
        let (_, frame) = hostile.encode_request(&fetch, 12);
        hostile.send_raw(&frame);
    }

    // A well-behaved client on the same shard is served meanwhile.
    let mut good = leader_conn(&broker, "small", 0);
    let mut peak = 0u64;
    for i in 0..20 {
        let t = Instant::now();
        let (err, base) = produce_to(&mut good, "small", 0, -1, batch(2, 50, Compression::None));
        assert_eq!((err, base), (0, i * 2));
        let (err, hw, _, bytes) = fetch_once(&mut good, "small", 0, i * 2);
        assert_eq!((err, hw), (0, i * 2 + 2));
        assert_eq!(decode_records(&bytes).len(), 2);
        assert!(
            t.elapsed() < SERVED_WITHIN,
            "round {i} took {:?}",
            t.elapsed()
        );
        peak = peak.max(broker.rss_bytes());
        std::thread::sleep(Duration::from_millis(100));
    }
    let growth = peak.saturating_sub(rss_before);
    eprintln!(
        "RSS before {} MiB, peak with {PIPELINED_FETCHES} unread {} MiB fetches {} MiB (+{} MiB)",
        rss_before >> 20,
        FETCH_MAX_BYTES >> 20,
        peak >> 20,
        growth >> 20
    );
    assert!(
        growth < RSS_GROWTH_MAX_BYTES,
        "unread fetch responses grew RSS by {} MiB",
        growth >> 20
    );
    // The hostile client's answers are intact once it reads them: the first one starts at
    // offset 0.
    let first = hostile.read_frame().expect("a response");
    assert!(first.len() > 1 << 20, "the first response carries data");
}
