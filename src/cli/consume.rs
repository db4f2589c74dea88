//! `osprey consume TOPIC`: prints records as kafka-console-consumer.sh and `kcat -C` do:
//! from the beginning, the end, an offset or a timestamp, of one partition or all; or as a
//! member of a consumer group (`--group`: JoinGroup/SyncGroup with the range assignor,
//! heartbeats, offsets committed every second and on exit, LeaveGroup). A kcat-style
//! `--format` (%k %v %p %o %t %h %T %K %S), `--max-messages`, `--exit-at-end`,
//! `--timeout-ms`; Ctrl-C (or SIGTERM) stops cleanly: the group member commits what it
//! printed and leaves.
//!
//! Runs in the CLI process on the client's executor; the signal handler only sets a flag.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use osprey_client::group::codes;
use osprey_client::{
    CONSUMER_PROTOCOL_TYPE, Client, ClientError, FetchOptions, FetchPosition, OffsetSpec,
    RANGE_ASSIGNOR, Record, count_records, decode_assignment, decode_records, decode_subscription,
    encode_assignment, encode_subscription, range_assign,
};
use serde_json::json;

use super::{CliError, CliResult, Common, Output};

/// How long a fetch waits at the broker for new records.
const FETCH_MAX_WAIT_MS: i32 = 500;
/// The group session: the coordinator drops a member silent for this long.
const SESSION_TIMEOUT_MS: i32 = 10_000;
/// How long a rebalance may take.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Heartbeat period (a third of the session, as Kafka's default ratio).
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// Committed offsets are written at most this often while consuming (and on exit).
const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// Joining may retry for this long (coordinator loading, concurrent rebalances).
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the stop flag is checked while waiting.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// The first Ctrl-C asks for a clean stop; the handler resets itself so a second one kills.
fn install_signal_handlers() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the
    // sigaction struct is fully initialised (zeroed, then the fields set).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        sa.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGINT, &sa, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &sa, std::ptr::null_mut());
    }
}

fn stopping() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Resolves once a stop was asked for.
async fn stop_requested() {
    while !stopping() {
        glommio::timer::sleep(STOP_POLL).await;
    }
}

/// Runs `fut` unless a stop comes first (then `None`).
async fn unless_stopped<T>(fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        stop_requested().await;
        None
    })
    .await
}

/// `osprey consume`.
#[derive(Args, Debug)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// The topic to read.
    pub topic: String,
    /// Start at the earliest offset (with --group: where the group has no committed offset).
    #[arg(long)]
    pub from_beginning: bool,
    /// Where to start: earliest, latest, or an offset (needs --partition).
    #[arg(long)]
    pub offset: Option<String>,
    /// Start at the first record with a timestamp at or after MS (ms since the epoch).
    #[arg(long, value_name = "MS")]
    pub timestamp: Option<i64>,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Consume as a member of this consumer group, committing offsets.
    #[arg(long)]
    pub group: Option<String>,
    /// Output per record: %k key, %v value, %p partition, %o offset, %t timestamp (ms),
    /// %h headers (k=v,...), %T topic, %K key length, %S value length, %% a percent sign;
    /// \n \t \r \\ escapes.
    #[arg(long, default_value = "%v\\n")]
    pub format: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop once every partition read is at its end (kcat -e).
    #[arg(long, short = 'e')]
    pub exit_at_end: bool,
    /// Stop when no record came for this long.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

/// Where reading starts (or restarts after OFFSET_OUT_OF_RANGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

/// One piece of a `--format`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(Vec<u8>),
    Key,
    Value,
    Partition,
    Offset,
    Timestamp,
    Headers,
    Topic,
    KeyLen,
    ValueLen,
}

fn parse_format(s: &str) -> CliResult<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut chars = s.chars();
    let bad = |what: String| {
        CliError::new(
            format!("--format {s:?}: {what}"),
            "use %k %v %p %o %t %h %T %K %S %% and \\n \\t \\r \\\\",
        )
    };
    while let Some(c) = chars.next() {
        match c {
            '%' => {
                let piece = match chars.next() {
                    Some('k') => Piece::Key,
                    Some('v') => Piece::Value,
                    Some('p') => Piece::Partition,
                    Some('o') => Piece::Offset,
                    Some('t') => Piece::Timestamp,
                    Some('h') => Piece::Headers,
                    Some('T') => Piece::Topic,
                    Some('K') => Piece::KeyLen,
                    Some('S') => Piece::ValueLen,
                    Some('%') => {
                        lit.push(b'%');
                        continue;
                    }
                    other => return Err(bad(format!("unknown %{}", other.unwrap_or(' ')))),
                };
                if !lit.is_empty() {
                    out.push(Piece::Lit(std::mem::take(&mut lit)));
                }
                out.push(piece);
            }
            '\\' => match chars.next() {
                Some('n') => lit.push(b'\n'),
                Some('t') => lit.push(b'\t'),
                Some('r') => lit.push(b'\r'),
                Some('\\') => lit.push(b'\\'),
                other => return Err(bad(format!("unknown \\{}", other.unwrap_or(' ')))),
            },
            c => {
                let mut b = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

fn render(pieces: &[Piece], topic: &str, partition: i32, r: &Record, out: &mut Vec<u8>) {
    for p in pieces {
        match p {
            Piece::Lit(l) => out.extend_from_slice(l),
            Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::KeyLen => {
                let n = r.key.as_ref().map_or(-1, |k| k.len() as i64);
                out.extend_from_slice(n.to_string().as_bytes());
            }
            Piece::ValueLen => {
                let n = r.value.as_ref().map_or(-1, |v| v.len() as i64);
                out.extend_from_slice(n.to_string().as_bytes());
            }
            Piece::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(v.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

fn record_json(topic: &str, partition: i32, r: &Record) -> serde_json::Value {
    let text =
        |b: &Option<bytes::Bytes>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let headers: serde_json::Map<String, serde_json::Value> = r
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(text(v))))
        .collect();
    json!({
        "topic": topic,
        "partition": partition,
        "offset": r.offset,
        "timestamp": r.timestamp,
        "key": text(&r.key),
        "value": text(&r.value),
        "headers": headers,
    })
}

/// Printing and stop conditions.
struct Printer {
    pieces: Vec<Piece>,
    output: Output,
    printed: u64,
    max: Option<u64>,
    last_record: Instant,
    /// stdout was closed (`| head`): stop quietly.
    closed: bool,
    progress: super::Progress,
}

impl Printer {
    fn full(&self) -> bool {
        self.max.is_some_and(|m| self.printed >= m) || self.closed
    }

    fn write(&mut self, buf: &[u8]) -> CliResult {
        if buf.is_empty() {
            return Ok(());
        }
        let mut out = std::io::stdout().lock();
        match out.write_all(buf).and_then(|()| out.flush()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(CliError::new(
                format!("writing to stdout: {e}"),
                "check where the output goes",
            )),
        }
    }
}

/// The partitions being read, their positions and whether each reached its end.
struct Reader {
    topic: String,
    positions: Vec<FetchPosition>,
    at_end: HashMap<i32, bool>,
    /// Where to go after OFFSET_OUT_OF_RANGE.
    reset: Start,
}

impl Reader {
    fn all_at_end(&self) -> bool {
        self.positions
            .iter()
            .all(|p| self.at_end.get(&p.partition).copied().unwrap_or(false))
    }

    fn offsets(&self) -> Vec<(String, i32, i64)> {
        self.positions
            .iter()
            .map(|p| (p.topic.clone(), p.partition, p.offset))
            .collect()
    }

    /// One fetch of every partition; prints what came.
    async fn poll(&mut self, client: &Client, printer: &mut Printer) -> CliResult {
        let opts = FetchOptions {
            max_wait_ms: FETCH_MAX_WAIT_MS,
            ..FetchOptions::default()
        };
        let Some(fetched) = unless_stopped(client.fetch(&self.positions, &opts)).await else {
            return Ok(());
        };
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) if e.is_stale_metadata() || transient(&e) => {
                glommio::timer::sleep(Duration::from_millis(200)).await;
                let _ = client.metadata(Some(&[self.topic.as_str()])).await;
                return Ok(());
            }
            Err(e) => return Err(CliError::client(format_args!("fetching {}", self.topic), e)),
        };
        let mut buf = Vec::new();
        for f in fetched {
            let Some(idx) = self
                .positions
                .iter()
                .position(|p| p.partition == f.partition)
            else {
                continue;
            };
            match &f.error {
                Ok(()) => {}
                Err(e) if e.kafka_code() == Some(1) => {
                    // OFFSET_OUT_OF_RANGE: the data was deleted or the offset is past the end.
                    let o = start_offsets(client, &self.topic, &[f.partition], self.reset).await?;
                    if let Some(&off) = o.get(&f.partition) {
                        eprintln!(
                            "osprey: {}/{} offset {} is out of range; continuing at {off}",
                            self.topic, f.partition, self.positions[idx].offset
                        );
                        self.positions[idx].offset = off;
                    }
                    continue;
                }
                Err(e) if e.is_stale_metadata() || transient(e) => {
                    let _ = client.metadata(Some(&[self.topic.as_str()])).await;
                    continue;
                }
                Err(e) => {
                    return Err(CliError::client(
                        format_args!("fetching {}/{}", self.topic, f.partition),
                        e.clone(),
                    ));
                }
            }
            let next = count_records(&f.records).1;
            let records = decode_records(f.records.clone()).map_err(|e| {
                CliError::client(format_args!("decoding {}/{}", self.topic, f.partition), e)
            })?;
            let pos = &mut self.positions[idx];
            let mut stopped_early = false;
            for r in records {
                if r.offset < pos.offset {
                    continue;
                }
                if printer.full() {
                    stopped_early = true;
                    break;
                }
                match printer.output {
                    Output::Table => {
                        render(&printer.pieces, &self.topic, f.partition, &r, &mut buf)
                    }
                    Output::Json => {
                        buf.extend_from_slice(
                            record_json(&self.topic, f.partition, &r)
                                .to_string()
                                .as_bytes(),
                        );
                        buf.push(b'\n');
                    }
                }
                printer.printed += 1;
                printer.last_record = Instant::now();
                pos.offset = r.offset + 1;
            }
            // Control records (transaction markers) are not printed but still passed.
            if !stopped_early
                && let Some(n) = next
                && n > pos.offset
            {
                pos.offset = n;
            }
            self.at_end.insert(
                f.partition,
                pos.offset >= f.high_watermark && !stopped_early,
            );
        }
        printer.write(&buf)?;
        let (printed, max) = (printer.printed, printer.max);
        printer.progress.update(|| match max {
            Some(m) => format!("consumed {printed}/{m} message(s) of {}", self.topic),
            None => format!("consumed {printed} message(s) of {}", self.topic),
        });
        Ok(())
    }
}

fn transient(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::ConnectionClosed { .. } | ClientError::Timeout { .. }
    )
}

/// The offsets `start` means for `partitions`.
async fn start_offsets(
    client: &Client,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> CliResult<BTreeMap<i32, i64>> {
    let spec = match start {
        Start::Offset(o) => return Ok(partitions.iter().map(|&p| (p, o)).collect()),
        Start::Earliest => OffsetSpec::Earliest,
        Start::Latest => OffsetSpec::Latest,
        Start::Timestamp(t) => OffsetSpec::Timestamp(t),
    };
    let offsets = client
        .list_offsets(topic, partitions, spec)
        .await
        .map_err(|e| CliError::client(format_args!("ListOffsets of {topic}"), e))?;
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for o in offsets {
        match o.offset {
            // A timestamp after the last record answers -1: start at the end.
            Ok(-1) => missing.push(o.partition),
            Ok(off) => {
                out.insert(o.partition, off);
            }
            Err(e) => {
                return Err(CliError::client(
                    format_args!("ListOffsets of {topic}/{}", o.partition),
                    e,
                ));
            }
        }
    }
    if !missing.is_empty() {
        for o in client
            .list_offsets(topic, &missing, OffsetSpec::Latest)
            .await
            .map_err(|e| CliError::client(format_args!("ListOffsets of {topic}"), e))?
        {
            if let Ok(off) = o.offset {
                out.insert(o.partition, off);
            }
        }
    }
    Ok(out)
}

/// Runs `osprey consume`.
pub fn main(args: ConsumeArgs) -> CliResult {
    let pieces = parse_format(&args.format)?;
    let start = match (&args.offset, args.timestamp, args.from_beginning) {
        (Some(_), Some(_), _) => {
            return Err(CliError::new(
                "--offset and --timestamp both given",
                "pick one starting point",
            ));
        }
        (Some(o), None, _) => match o.as_str() {
            "earliest" | "beginning" => Start::Earliest,
            "latest" | "end" => Start::Latest,
            n => match n.parse::<i64>() {
                Ok(v) if v >= 0 && args.partition.is_some() => Start::Offset(v),
                Ok(_) if args.partition.is_none() => {
                    return Err(CliError::new(
                        "--offset N needs --partition",
                        "offsets belong to one partition: add --partition P",
                    ));
                }
                _ => {
                    return Err(CliError::new(
                        format!("--offset {n:?} is not earliest, latest or an offset"),
                        "use --offset earliest, --offset latest or --offset 42",
                    ));
                }
            },
        },
        (None, Some(t), _) => Start::Timestamp(t),
        (None, None, true) => Start::Earliest,
        (None, None, false) => Start::Latest,
    };
    if args.group.is_some() && (args.partition.is_some() || args.offset.is_some()) {
        return Err(CliError::new(
            "--group cannot be combined with --partition or --offset",
            "a group member reads what the group assigns it, from the committed offsets; \
             use `osprey groups reset-offsets` to move them",
        ));
    }
    if args.group.is_some() && args.timestamp.is_some() {
        return Err(CliError::new(
            "--group cannot be combined with --timestamp",
            "move the group's offsets with `osprey groups reset-offsets --to-timestamp` first",
        ));
    }
    install_signal_handlers();
    let common = args.common.clone();
    super::run(&common, move |client| async move {
        let mut printer = Printer {
            pieces,
            output: args.common.output,
            printed: 0,
            max: args.max_messages,
            last_record: Instant::now(),
            closed: false,
            progress: super::Progress::new(&args.common, true),
        };
        let r = match &args.group {
            Some(g) => consume_group(&client, &args, g, start, &mut printer).await,
            None => consume_plain(&client, &args, start, &mut printer).await,
        };
        printer.progress.finish();
        eprintln!("osprey: consumed {} message(s)", printer.printed);
        r
    })
}

fn timed_out(args: &ConsumeArgs, printer: &Printer) -> bool {
    args.timeout_ms
        .is_some_and(|t| printer.last_record.elapsed() >= Duration::from_millis(t))
}

async fn topic_partitions(client: &Client, topic: &str) -> CliResult<Vec<i32>> {
    let md = client
        .metadata(Some(&[topic]))
        .await
        .map_err(|e| CliError::client(format_args!("looking up {topic}"), e))?;
    match md.topics.iter().find(|t| t.name == topic) {
        Some(t) if t.error_code == 0 => Ok(t.partitions.iter().map(|p| p.partition).collect()),
        Some(t) => Err(CliError::new(
            format!("topic {topic}: {}", super::kafka_error(t.error_code)),
            "check the name with `osprey topics list`",
        )),
        None => Err(CliError::new(
            format!("topic {topic} is not in the broker's metadata"),
            "check the name with `osprey topics list`",
        )),
    }
}

async fn consume_plain(
    client: &Client,
    args: &ConsumeArgs,
    start: Start,
    printer: &mut Printer,
) -> CliResult {
    let topic = args.topic.as_str();
    let all = topic_partitions(client, topic).await?;
    let partitions = match args.partition {
        Some(p) if all.contains(&p) => vec![p],
        Some(p) => {
            return Err(CliError::new(
                format!("{topic} has no partition {p} (it has {})", all.len()),
                "pick a partition from `osprey topics describe`",
            ));
        }
        None => all,
    };
    let offsets = start_offsets(client, topic, &partitions, start).await?;
    let mut reader = Reader {
        topic: topic.to_owned(),
        positions: offsets
            .iter()
            .map(|(&p, &o)| FetchPosition {
                topic: topic.to_owned(),
                partition: p,
                offset: o,
            })
            .collect(),
        at_end: HashMap::new(),
        reset: if start == Start::Earliest {
            Start::Earliest
        } else {
            Start::Latest
        },
    };
    while !stopping() && !printer.full() && !timed_out(args, printer) {
        if args.exit_at_end && reader.all_at_end() {
            break;
        }
        reader.poll(client, printer).await?;
    }
    Ok(())
}

/// A group member's identity.
struct Member {
    group: String,
    id: String,
    generation: i32,
}

fn needs_rejoin(e: &ClientError) -> bool {
    matches!(
        e.kafka_code(),
        Some(codes::REBALANCE_IN_PROGRESS | codes::ILLEGAL_GENERATION | codes::UNKNOWN_MEMBER_ID)
    )
}

fn coordinator_moving(e: &ClientError) -> bool {
    matches!(
        e.kafka_code(),
        Some(
            codes::COORDINATOR_LOAD_IN_PROGRESS
                | codes::COORDINATOR_NOT_AVAILABLE
                | codes::NOT_COORDINATOR
        )
    ) || transient(e)
}

/// Joins (or rejoins) the group; returns this member's partitions of `topic`, or None if a
/// stop came first. The leader assigns every subscribed topic with the range assignor.
async fn join(client: &Client, m: &mut Member, topic: &str) -> CliResult<Option<Vec<i32>>> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let meta = encode_subscription(&[topic.to_owned()])
        .map_err(|e| CliError::client("encoding the subscription", e))?;
    let protocols = [(RANGE_ASSIGNOR.to_owned(), meta)];
    loop {
        if stopping() {
            return Ok(None);
        }
        let attempt = async {
            let j = client
                .join_group(
                    &m.group,
                    &m.id,
                    SESSION_TIMEOUT_MS,
                    REBALANCE_TIMEOUT_MS,
                    CONSUMER_PROTOCOL_TYPE,
                    &protocols,
                )
                .await?;
            m.id = j.member_id.clone();
            let mut assignments = Vec::new();
            if j.is_leader() {
                let members: Vec<(String, Vec<String>)> = j
                    .members
                    .iter()
                    .map(|x| {
                        (
                            x.member_id.clone(),
                            decode_subscription(x.metadata.clone()).unwrap_or_default(),
                        )
                    })
                    .collect();
                let mut topics: Vec<&str> = members
                    .iter()
                    .flat_map(|(_, ts)| ts.iter().map(String::as_str))
                    .collect();
                topics.sort_unstable();
                topics.dedup();
                let md = client.metadata(Some(&topics)).await?;
                let counts: BTreeMap<String, i32> = md
                    .topics
                    .iter()
                    .filter(|t| t.error_code == 0)
                    .map(|t| (t.name.clone(), t.partitions.len() as i32))
                    .collect();
                for (mid, a) in range_assign(&members, &counts) {
                    assignments.push((mid, encode_assignment(&a)?));
                }
            }
            let proto = j
                .protocol_name
                .clone()
                .unwrap_or_else(|| RANGE_ASSIGNOR.to_owned());
            let a = client
                .sync_group(
                    &m.group,
                    j.generation,
                    &j.member_id,
                    CONSUMER_PROTOCOL_TYPE,
                    &proto,
                    &assignments,
                )
                .await?;
            let mine = decode_assignment(a)?;
            Ok::<_, ClientError>((j.generation, mine.get(topic).cloned().unwrap_or_default()))
        };
        let Some(res) = unless_stopped(attempt).await else {
            return Ok(None);
        };
        match res {
            Ok((generation, parts)) => {
                m.generation = generation;
                return Ok(Some(parts));
            }
            Err(e) if Instant::now() < deadline && (needs_rejoin(&e) || coordinator_moving(&e)) => {
                if e.kafka_code() == Some(codes::UNKNOWN_MEMBER_ID) {
                    m.id.clear();
                }
                if coordinator_moving(&e) {
                    glommio::timer::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(e) => {
                return Err(CliError::client(
                    format_args!("joining group {}", m.group),
                    e,
                ));
            }
        }
    }
}

/// The positions of freshly assigned partitions: committed offsets, else the reset policy.
async fn group_positions(
    client: &Client,
    m: &Member,
    topic: &str,
    parts: &[i32],
    reset: Start,
) -> CliResult<Vec<FetchPosition>> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let committed = client
        .offset_fetch(&m.group, Some(&[(topic, parts)]))
        .await
        .map_err(|e| CliError::client(format_args!("reading {}'s offsets", m.group), e))?;
    let mut out = BTreeMap::new();
    let mut uncommitted = Vec::new();
    for &p in parts {
        match committed
            .iter()
            .find(|c| c.partition == p)
            .map(|c| c.offset.clone())
        {
            Some(Ok(o)) if o >= 0 => {
                out.insert(p, o);
            }
            _ => uncommitted.push(p),
        }
    }
    if !uncommitted.is_empty() {
        out.extend(start_offsets(client, topic, &uncommitted, reset).await?);
    }
    Ok(out
        .into_iter()
        .map(|(p, o)| FetchPosition {
            topic: topic.to_owned(),
            partition: p,
            offset: o,
        })
        .collect())
}

async fn commit(client: &Client, m: &Member, reader: &Reader) -> Result<(), ClientError> {
    if reader.positions.is_empty() {
        return Ok(());
    }
    client
        .offset_commit(&m.group, m.generation, &m.id, &reader.offsets())
        .await
}

async fn consume_group(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    start: Start,
    printer: &mut Printer,
) -> CliResult {
    let topic = args.topic.as_str();
    topic_partitions(client, topic).await?;
    let reset = if start == Start::Earliest {
        Start::Earliest
    } else {
        Start::Latest
    };
    let mut m = Member {
        group: group.to_owned(),
        id: String::new(),
        generation: -1,
    };
    let mut reader = Reader {
        topic: topic.to_owned(),
        positions: Vec::new(),
        at_end: HashMap::new(),
        reset,
    };
    let mut rejoin = true;
    let mut next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
    let mut next_commit = Instant::now() + COMMIT_INTERVAL;
    let mut dirty = false;
    let result: CliResult = async {
        loop {
            if rejoin {
                if dirty && let Err(e) = commit(client, &m, &reader).await {
                    eprintln!("osprey: committing before the rebalance failed: {e}");
                }
                let Some(parts) = join(client, &mut m, topic).await? else {
                    return Ok(());
                };
                reader.positions = group_positions(client, &m, topic, &parts, reset).await?;
                reader.at_end.clear();
                rejoin = false;
                dirty = false;
                next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
            }
            if stopping() || printer.full() || timed_out(args, printer) {
                return Ok(());
            }
            if args.exit_at_end && reader.all_at_end() {
                return Ok(());
            }
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + HEARTBEAT_INTERVAL;
                match client.heartbeat(&m.group, m.generation, &m.id).await {
                    Ok(()) => {}
                    Err(e) if needs_rejoin(&e) => {
                        if e.kafka_code() == Some(codes::UNKNOWN_MEMBER_ID) {
                            m.id.clear();
                            dirty = false;
                        }
                        rejoin = true;
                        continue;
                    }
                    Err(e) if coordinator_moving(&e) => {}
                    Err(e) => {
                        return Err(CliError::client(format_args!("heartbeat to {group}"), e));
                    }
                }
            }
            if reader.positions.is_empty() {
                // Nothing assigned (more members than partitions): wait for a rebalance.
                unless_stopped(glommio::timer::sleep(Duration::from_millis(500))).await;
                continue;
            }
            let before = printer.printed;
            reader.poll(client, printer).await?;
            dirty |= printer.printed > before;
            if dirty && Instant::now() >= next_commit {
                next_commit = Instant::now() + COMMIT_INTERVAL;
                match commit(client, &m, &reader).await {
                    Ok(()) => dirty = false,
                    Err(e) if needs_rejoin(&e) => rejoin = true,
                    Err(e) if coordinator_moving(&e) => {}
                    Err(e) => {
                        return Err(CliError::client(
                            format_args!("committing offsets of {group}"),
                            e,
                        ));
                    }
                }
            }
        }
    }
    .await;
    // Commit what was printed and leave, also after Ctrl-C or an error.
    if !m.id.is_empty() {
        if dirty && let Err(e) = commit(client, &m, &reader).await {
            eprintln!("osprey: final commit of {group} failed: {e}");
            if result.is_ok() {
                return Err(CliError::client(
                    format_args!("committing offsets of {group}"),
                    e,
                ));
            }
        }
        if let Err(e) = client.leave_group(&m.group, &m.id).await {
            eprintln!("osprey: leaving {group}: {e}");
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a kcat-style format renders every field and escape, and that an unknown
    // directive is refused rather than printed.
    #[test]
    fn format_renders_fields() {
        let pieces = parse_format("%T/%p@%o %k=%v [%h] %K %S %t%%\\n").unwrap();
        let mut r = Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset: 7,
            sequence: -1,
            timestamp: 99,
            key: Some(bytes::Bytes::from_static(b"k")),
            value: Some(bytes::Bytes::from_static(b"val")),
            headers: Default::default(),
        };
        r.headers.insert(
            kafka_protocol::protocol::StrBytes::from_static_str("a"),
            Some(bytes::Bytes::from_static(b"1")),
        );
        let mut out = Vec::new();
        render(&pieces, "t", 2, &r, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "t/2@7 k=val [a=1] 1 3 99%\n"
        );
        assert!(parse_format("%x").is_err());
    }
}
