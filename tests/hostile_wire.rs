//! Hostile clients over the wire, each beside a well-behaved client that must keep being
//! served, with the broker's resident memory (VmRSS from /proc/<pid>/status) measured and
//! printed: thousands of connections past `--connections-max`, slowloris clients trickling
//! frames in one byte per second, a flood of pipelined requests whose responses are never
//! read, and random bytes after a valid request header for every API key and version the
//! broker announces. Each test is bounded in count and time (a few seconds each).

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use common::*;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

const MIB: u64 = 1 << 20;

/// Raises this process's open-files limit (the broker inherits it) so thousands of
/// sockets fit on both ends.
fn raise_nofile(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: a valid rlimit for the call; failure leaves the limit as it was.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) };
}

/// The well-behaved client: ApiVersions and Metadata on its connection, answered within a
/// second each. Returns the slower round trip.
fn served(conn: &mut Conn) -> Duration {
    let t = Instant::now();
    let v = conn.request(&ApiVersionsRequest::default(), 3);
    assert_eq!(v.error_code, 0);
    let a = t.elapsed();
    let t = Instant::now();
    let m = conn.request(&MetadataRequest::default(), 9);
    assert!(!m.brokers.is_empty());
    let b = t.elapsed();
    let worst = a.max(b);
    assert!(
        worst < Duration::from_secs(1),
        "well-behaved client waited {worst:?}"
    );
    worst
}

fn frame_of(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Option<Vec<u8>> {
    let key = ApiKey::try_from(api_key).ok()?;
    let header = RequestHeader::default()
        .with_request_api_key(api_key)
        .with_request_api_version(version)
        .with_correlation_id(correlation)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    let mut b = BytesMut::new();
    header
        .encode(&mut b, key.request_header_version(version))
        .ok()?;
    b.extend_from_slice(body);
    let mut f = Vec::with_capacity(b.len() + 4);
    f.put_i32(b.len() as i32);
    f.extend_from_slice(&b);
    Some(f)
}

fn raw_connect(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(2))).ok()?;
    Some(s)
}

/// True if the peer closed `s` (EOF or reset) within `wait`; false if it is still open.
fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let _ = s.set_read_timeout(Some(wait));
    let mut b = [0u8; 1024];
    match s.read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
    }
}

// Proves the per-shard connection limit holds against 3,000 connections: exactly
// `--connections-max` are served (the well-behaved client's included), every other one is
// closed at once, the well-behaved client is served throughout, and once the flood goes
// away new connections are accepted again.
#[test]
fn thousands_of_connections_past_the_limit() {
    const LIMIT: usize = 500;
    const FLOOD: usize = 3_000;
    raise_nofile(16_384);
    let dir = tmpdir();
    let limit = LIMIT.to_string();
    let broker = Broker::start_in(dir.path(), 1, &["--connections-max", &limit]);
    let mut good = broker.connect();
    served(&mut good);
    let rss0 = broker.rss_bytes();
    let t0 = Instant::now();
    let mut flood: Vec<TcpStream> = (0..FLOOD)
        .filter_map(|_| raw_connect(broker.bootstrap))
        .collect();
    let rss_open = broker.rss_bytes();
    // Each flood connection asks once: an answer means the broker serves it.
    let (mut answered, mut closed) = (0, 0);
    let ask = frame_of(18, 2, 1, &[]).expect("ApiVersions frame");
    for s in &mut flood {
        let _ = s.write_all(&ask);
    }
    for s in &mut flood {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len) {
            Ok(()) => answered += 1,
            Err(_) => closed += 1,
        }
    }
    served(&mut good);
    let rss_flood = broker.rss_bytes();
    println!(
        "connections: {FLOOD} opened in {:?}, {answered} served, {closed} refused; RSS {} MiB before, {} MiB with them open, {} MiB after one request each",
        t0.elapsed(),
        rss0 / MIB,
        rss_open / MIB,
        rss_flood / MIB
    );
    assert_eq!(answered, LIMIT - 1, "served beside the well-behaved client");
    assert_eq!(closed, FLOOD - (LIMIT - 1));
    assert!(
        rss_flood < rss0 + 128 * MIB,
        "RSS grew by {} MiB",
        (rss_flood - rss0) / MIB
    );
    drop(flood);
    // The slots come back: a new client is accepted again (bounded wait).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = raw_connect(broker.bootstrap).expect("connect");
        let _ = c.write_all(&ask);
        let mut len = [0u8; 4];
        if c.read_exact(&mut len).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no connection accepted after the flood"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    served(&mut good);
}

// Proves slowloris clients hold nothing for long: 300 connections announce a 1 MiB frame
// and then send one byte per second, or stall after one byte of a length prefix; the broker closes
// each by its frame deadline (`--frame-read-timeout-ms`, 2 s here), its RSS stays flat,
// and the well-behaved client is served every second meanwhile.
#[test]
fn slowloris_is_cut_at_the_frame_deadline() {
    const SLOW: usize = 300;
    raise_nofile(16_384);
    let dir = tmpdir();
    let broker = Broker::start_in(dir.path(), 1, &["--frame-read-timeout-ms", "2000"]);
    let mut good = broker.connect();
    served(&mut good);
    let rss0 = broker.rss_bytes();
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .filter_map(|_| raw_connect(broker.bootstrap))
        .collect();
    assert_eq!(slow.len(), SLOW);
    // Two in three announce a 1 MiB body; the others send one byte of the length prefix.
    for (i, s) in slow.iter_mut().enumerate() {
        let first: &[u8] = if i % 3 == 2 {
            &[0]
        } else {
            &(1i32 << 20).to_be_bytes()
        };
        s.write_all(first).expect("write");
    }
    let t0 = Instant::now();
    let mut rss_max = 0;
    let mut open = SLOW;
    let mut worst = Duration::ZERO;
    for _second in 0..6 {
        std::thread::sleep(Duration::from_secs(1));
        open = 0;
        for (i, s) in slow.iter_mut().enumerate() {
            // One byte per second of the announced bodies; the partial length prefixes
            // stall (they must be cut too, not wait for the 10-minute idle limit).
            let wrote = i % 3 == 2 || s.write_all(&[0]).is_ok();
            if wrote && !closed_within(s, Duration::from_millis(1)) {
                open += 1;
            }
        }
        rss_max = rss_max.max(broker.rss_bytes());
        worst = worst.max(served(&mut good));
        if open == 0 {
            break;
        }
    }
    println!(
        "slowloris: {SLOW} trickling connections, {open} still open after {:?}; RSS {} MiB before, at most {} MiB during; well-behaved worst round trip {worst:?}",
        t0.elapsed(),
        rss0 / MIB,
        rss_max / MIB
    );
    assert_eq!(open, 0, "slowloris connections outlived the frame deadline");
    assert!(
        rss_max < rss0 + 64 * MIB,
        "RSS grew by {} MiB",
        (rss_max - rss0) / MIB
    );
}

// Proves a client that pipelines requests and never reads a response is held back by
// INFLIGHT_REQUESTS_PER_CONNECTION_MAX and TCP, not by memory: 4 connections write
// ApiVersions requests until their sockets stay full for 0.3 s; the broker's RSS stays
// bounded and the well-behaved client is served.
#[test]
fn pipelined_flood_without_reading_is_bounded() {
    const CONNS: usize = 4;
    let dir = tmpdir();
    let broker = Broker::start_in(dir.path(), 1, &[]);
    let mut good = broker.connect();
    served(&mut good);
    let rss0 = broker.rss_bytes();
    let t0 = Instant::now();
    // ApiVersions v2: a 30-byte request whose answer is ~0.5 KiB.
    let req = frame_of(18, 2, 7, &[]).expect("ApiVersions frame");
    let mut burst = Vec::new();
    for _ in 0..256 {
        burst.extend_from_slice(&req);
    }
    let mut conns = Vec::new();
    let mut sent_bytes = 0u64;
    for _ in 0..CONNS {
        let s = raw_connect(broker.bootstrap).expect("connect");
        s.set_write_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        conns.push(s);
    }
    // Write until every socket stays full for 0.3 s (bounded: 6 MiB per connection).
    for s in &mut conns {
        let mut mine = 0u64;
        while mine < 6 * MIB {
            match s.write(&burst) {
                Ok(n) => mine += n as u64,
                Err(_) => break,
            }
        }
        sent_bytes += mine;
    }
    let rss_flood = broker.rss_bytes();
    let worst = served(&mut good);
    // The flooders are held back, not thrown out: their connections are still open.
    let mut open = 0;
    for s in &mut conns {
        if !closed_within(s, Duration::from_millis(100)) {
            open += 1;
        }
    }
    println!(
        "pipelined flood: {CONNS} connections, {} requests written ({} KiB) before TCP pushed back, in {:?}, {open} still open; RSS {} MiB before, {} MiB during; well-behaved round trip {worst:?}",
        sent_bytes / req.len() as u64,
        sent_bytes / 1024,
        t0.elapsed(),
        rss0 / MIB,
        rss_flood / MIB
    );
    assert!(
        sent_bytes < (CONNS as u64) * 6 * MIB,
        "the broker never pushed back"
    );
    assert_eq!(
        open, CONNS,
        "flooding connections were closed, not held back"
    );
    assert!(
        rss_flood < rss0 + 128 * MIB,
        "RSS grew by {} MiB",
        (rss_flood - rss0) / MIB
    );
    drop(conns);
    served(&mut good);
}

// Proves random bytes after a valid request header, for every API key and version the
// broker announces in ApiVersions (10 bodies each, 0-300 bytes), only ever get an answer,
// silence or a closed connection: the broker never crashes and keeps serving the
// well-behaved client. Seeded (HOSTILE_SEED).
#[test]
fn random_bodies_for_every_api_key_and_version() {
    let dir = tmpdir();
    let mut broker = Broker::start_in(dir.path(), 1, &[]);
    let mut good = broker.connect();
    served(&mut good);
    let rss0 = broker.rss_bytes();
    let versions = good.request(&ApiVersionsRequest::default(), 3);
    let seed: u64 = std::env::var("HOSTILE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_261_130);
    let mut rng = seed;
    let mut next = move || {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        rng >> 33
    };
    let t0 = Instant::now();
    let (mut sent, mut answered, mut closed, mut silent) = (0u64, 0u64, 0u64, 0u64);
    let mut conn: Option<TcpStream> = None;
    for k in &versions.api_keys {
        for v in k.min_version..=k.max_version {
            for _ in 0..10 {
                let len = next() % 301;
                let body: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                let Some(f) = frame_of(k.api_key, v, sent as i32, &body) else {
                    continue;
                };
                let s = match conn.as_mut() {
                    Some(s) => s,
                    None => conn.insert(raw_connect(broker.bootstrap).expect("connect")),
                };
                sent += 1;
                let _ = s.set_read_timeout(Some(Duration::from_millis(150)));
                let mut len = [0u8; 4];
                let outcome = s.write_all(&f).and_then(|()| s.read_exact(&mut len));
                match outcome {
                    Ok(()) => {
                        answered += 1;
                        // Skip the answer's body; a fresh connection keeps framing simple.
                        conn = None;
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                        // A long poll or acks=0 produce: no answer yet; move on.
                        silent += 1;
                        conn = None;
                    }
                    Err(_) => {
                        closed += 1;
                        conn = None;
                    }
                }
            }
        }
        assert!(broker.is_running(), "broker died at API key {}", k.api_key);
    }
    let worst = served(&mut good);
    let rss = broker.rss_bytes();
    println!(
        "random bodies (seed {seed}): {} API keys, {sent} requests in {:?}: {answered} answered, {closed} closed, {silent} silent; RSS {} MiB before, {} MiB after; well-behaved round trip {worst:?}",
        versions.api_keys.len(),
        t0.elapsed(),
        rss0 / MIB,
        rss / MIB
    );
    assert!(sent > 300, "too few API versions announced: {sent}");
    assert!(broker.is_running());
    assert!(
        rss < rss0 + 128 * MIB,
        "RSS grew by {} MiB",
        (rss - rss0) / MIB
    );
}

fn join_v3(conn: &mut Conn, group: &str, member: &str, metadata: &[u8]) -> (i16, String) {
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::{GroupId, JoinGroupRequest};
    let r = conn.request(
        &JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_session_timeout_ms(30_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.to_string()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str("range"))
                    .with_metadata(bytes::Bytes::copy_from_slice(metadata)),
            ]),
        3,
    );
    (r.error_code, r.member_id.to_string())
}

fn heartbeat_ok(conn: &mut Conn, group: &str, member: &str, generation: i32) {
    use kafka_protocol::messages::{GroupId, HeartbeatRequest};
    let r = conn.request(
        &HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_string())))
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member.to_string())),
        3,
    );
    assert_eq!(r.error_code, 0, "well-behaved member's heartbeat");
}

// Proves the per-shard bound on group membership memory (`--group-membership-max-bytes`,
// 1 MiB here): members of 64 KiB protocol metadata join new groups until the shard's
// bound is reached, every one beyond gets GROUP_MAX_SIZE_REACHED at once, a member that
// joined before keeps heartbeating, RSS stays flat, and once the members leave, joins are
// admitted again (after the once-a-second recount).
#[test]
fn group_membership_is_bounded_per_shard() {
    const GROUP_MAX_SIZE_REACHED: i16 = 81;
    const METADATA_BYTES: usize = 64 << 10;
    let dir = tmpdir();
    let broker = Broker::start_in(
        dir.path(),
        1,
        &[
            "--group-membership-max-bytes",
            "1048576",
            "--group-initial-rebalance-delay-ms",
            "0",
        ],
    );
    let mut good = coord_conn(&broker, "good");
    let (code, good_id) = join_v3(&mut good, "good", "", b"small");
    assert_eq!(code, 0);
    heartbeat_ok(&mut good, "good", &good_id, 1);
    let rss0 = broker.rss_bytes();
    let metadata = vec![7u8; METADATA_BYTES];
    let (mut admitted, mut refused) = (Vec::new(), 0);
    let t0 = Instant::now();
    for i in 0..40 {
        let mut c = broker.connect_node(0);
        let group = format!("hog-{i}");
        let (code, id) = join_v3(&mut c, &group, "", &metadata);
        match code {
            0 => admitted.push((c, group, id)),
            GROUP_MAX_SIZE_REACHED => refused += 1,
            other => panic!("join {i} answered {other}"),
        }
        heartbeat_ok(&mut good, "good", &good_id, 1);
    }
    let rss = broker.rss_bytes();
    println!(
        "group membership: 40 joins of {} KiB metadata in {:?}: {} admitted, {refused} refused (GROUP_MAX_SIZE_REACHED); RSS {} MiB before, {} MiB after",
        METADATA_BYTES >> 10,
        t0.elapsed(),
        admitted.len(),
        rss0 / MIB,
        rss / MIB
    );
    // 1 MiB holds 15 such members (the well-behaved one is small).
    assert!(
        (10..=16).contains(&admitted.len()),
        "admitted {}",
        admitted.len()
    );
    assert_eq!(admitted.len() + refused, 40);
    // The members leave; the recount frees their bytes and a join goes through again.
    for (c, group, id) in &mut admitted {
        use kafka_protocol::messages::{GroupId, LeaveGroupRequest};
        let r = c.request(
            &LeaveGroupRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                .with_member_id(StrBytes::from_string(id.clone())),
            0,
        );
        assert_eq!(r.error_code, 0);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut c = broker.connect_node(0);
    loop {
        let (code, _) = join_v3(&mut c, "after", "", &metadata);
        if code == 0 {
            break;
        }
        assert_eq!(code, GROUP_MAX_SIZE_REACHED);
        assert!(Instant::now() < deadline, "membership bytes never freed");
        std::thread::sleep(Duration::from_millis(200));
    }
    heartbeat_ok(&mut good, "good", &good_id, 1);
}
