//! `osprey produce TOPIC`: one record per input line (stdin or `--file`), as
//! kafka-console-producer.sh and `kcat -P` do: an optional key before `--key-separator`,
//! static `--header`s, Kafka's default partitioner (murmur2 of the key; unkeyed lines go to
//! one partition per batch, the next one for the next batch) or a fixed `--partition`,
//! `--acks`, `--compression`, and idempotence (`--idempotence`: InitProducerId, then
//! sequence numbers per partition). Retriable errors are retried; whatever still fails is
//! printed with its input lines and the command exits non-zero.
//!
//! Runs in the CLI process: a reader thread feeds lines through a bounded channel to the
//! client's executor, so a slow pipe never blocks the network and lines typed by hand are
//! sent at once.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use osprey_client::{
    Acks, Client, ClientError, Compression, ProducerIdentity, ProducerRecord, encode_batch_as,
    parse_compression,
};
use serde_json::json;

use super::{
    ADMIN_TIMEOUT_MS, CliError, CliResult, Common, Output, now_ms, parse_key_value, print_json,
    write_stdout,
};

/// Lines read ahead of the producer (the reader thread waits when this many are queued).
const LINES_QUEUED_MAX: usize = 4096;
/// A batch is sent once it holds this many bytes of keys and values (below Kafka's default
/// max.message.bytes of 1 MiB).
const BATCH_MAX_BYTES: usize = 512 << 10;
/// Attempts of a batch that fails with a retriable error.
const PRODUCE_ATTEMPTS_MAX: u32 = 5;
/// Wait before the first retry; doubled for each next one.
const RETRY_BACKOFF_MS: u64 = 100;

/// `osprey produce`.
#[derive(Args, Debug)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    /// The topic to write to (it must exist: `osprey topics create`).
    pub topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long)]
    pub file: Option<PathBuf>,
    /// Split each line at the first SEP into key and value (a line without SEP has no key).
    #[arg(long, value_name = "SEP")]
    pub key_separator: Option<String>,
    /// A header added to every record, name=value; repeatable.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// Write every record to this partition instead of choosing by key.
    #[arg(long)]
    pub partition: Option<i32>,
    /// Acknowledgements: 0, 1 or all (-1).
    #[arg(long, alias = "request-required-acks", default_value = "all")]
    pub acks: String,
    /// Compression of the batches: none, gzip, snappy, lz4, zstd.
    #[arg(long, alias = "compression-codec", default_value = "none")]
    pub compression: String,
    /// Idempotent producer (enable.idempotence): a retried batch is never written twice.
    /// Needs --acks all.
    #[arg(long)]
    pub idempotence: bool,
    /// Records per batch at most.
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
}

/// What the reader thread sends.
enum Input {
    /// A line (1-based number, bytes without the line end).
    Line(u64, Vec<u8>),
    /// Reading failed.
    Error(String),
}

/// Records waiting for one partition.
struct Pending {
    records: Vec<ProducerRecord>,
    bytes: usize,
    first_line: u64,
    last_line: u64,
}

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), which its default
/// partitioner applies to record keys: the same key lands on the same partition as with
/// Kafka's own clients.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h: u32 = SEED ^ data.len() as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives a key.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn spawn_reader(file: Option<PathBuf>) -> CliResult<tokio::sync::mpsc::Receiver<Input>> {
    let reader: Box<dyn BufRead + Send> = match &file {
        Some(path) => Box::new(std::io::BufReader::new(std::fs::File::open(path).map_err(
            |e| {
                CliError::new(
                    format!("cannot open {}: {e}", path.display()),
                    "check the --file path",
                )
            },
        )?)),
        None => Box::new(std::io::BufReader::new(std::io::stdin())),
    };
    let (tx, rx) = tokio::sync::mpsc::channel(LINES_QUEUED_MAX);
    std::thread::Builder::new()
        .name("produce-input".into())
        .spawn(move || {
            let mut reader = reader;
            let mut number = 0u64;
            loop {
                let mut line = Vec::new();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) => return,
                    Ok(_) => {
                        number += 1;
                        if line.last() == Some(&b'\n') {
                            line.pop();
                            if line.last() == Some(&b'\r') {
                                line.pop();
                            }
                        }
                        if tx.blocking_send(Input::Line(number, line)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.blocking_send(Input::Error(format!(
                            "reading input after line {number}: {e}"
                        )));
                        return;
                    }
                }
            }
        })
        .map_err(|e| CliError::new(format!("cannot start the input reader: {e}"), "retry"))?;
    Ok(rx)
}

fn split_key(line: Vec<u8>, sep: Option<&[u8]>) -> (Option<Bytes>, Bytes) {
    if let Some(sep) = sep
        && !sep.is_empty()
        && let Some(at) = line.windows(sep.len()).position(|w| w == sep)
    {
        let key = Bytes::copy_from_slice(&line[..at]);
        let value = Bytes::copy_from_slice(&line[at + sep.len()..]);
        return (Some(key), value);
    }
    (None, Bytes::from(line))
}

fn retriable(e: &ClientError) -> bool {
    e.is_stale_metadata()
        || matches!(
            e,
            ClientError::ConnectionClosed { .. } | ClientError::Timeout { .. }
        )
        || matches!(e.kafka_code(), Some(7 | 19 | 20))
}

/// The producer's state across batches.
struct Producer<'a> {
    client: &'a Client,
    topic: &'a str,
    acks: Acks,
    compression: Compression,
    /// (producer id, epoch) when idempotent.
    identity: Option<(i64, i16)>,
    /// Next sequence number per partition (idempotence).
    sequences: HashMap<i32, i32>,
    produced: u64,
    failed: u64,
    /// Per partition: records written and the last offset (None with acks=0).
    written: BTreeMap<i32, (u64, Option<i64>)>,
}

impl Producer<'_> {
    /// Sends every pending batch (one request per leader), retrying retriable failures.
    async fn flush(&mut self, pending: &mut BTreeMap<i32, Pending>) {
        let timestamp = now_ms();
        let mut todo: Vec<(i32, Pending, Bytes)> = Vec::new();
        for (p, batch) in std::mem::take(pending) {
            let identity = self.identity.map(|(id, epoch)| ProducerIdentity {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: *self.sequences.get(&p).unwrap_or(&0),
            });
            match encode_batch_as(&batch.records, self.compression, timestamp, identity) {
                Ok(bytes) => todo.push((p, batch, bytes)),
                Err(e) => self.fail(p, &batch, &e),
            }
        }
        let mut attempt = 1;
        while !todo.is_empty() {
            let sends: Vec<(i32, Bytes)> = todo.iter().map(|(p, _, b)| (*p, b.clone())).collect();
            let results = match self
                .client
                .produce_partitions(self.topic, sends, self.acks, ADMIN_TIMEOUT_MS)
                .await
            {
                Ok(r) => r,
                Err(e) => todo.iter().map(|(p, _, _)| (*p, Err(e.clone()))).collect(),
            };
            let mut retry = Vec::new();
            for ((p, batch, bytes), (_, result)) in todo.into_iter().zip(results) {
                match result {
                    Ok(ack) => {
                        let n = batch.records.len() as u64;
                        self.produced += n;
                        if self.identity.is_some() {
                            let s = self.sequences.entry(p).or_insert(0);
                            *s = s.wrapping_add(n as i32);
                        }
                        let w = self.written.entry(p).or_insert((0, None));
                        w.0 += n;
                        w.1 = ack.base_offset.map(|b| b + n as i64 - 1);
                    }
                    Err(e) if retriable(&e) && attempt < PRODUCE_ATTEMPTS_MAX => {
                        retry.push((p, batch, bytes));
                    }
                    Err(e) => self.fail(p, &batch, &e),
                }
            }
            todo = retry;
            if !todo.is_empty() {
                glommio::timer::sleep(Duration::from_millis(
                    RETRY_BACKOFF_MS << (attempt - 1).min(6),
                ))
                .await;
                let _ = self.client.metadata(Some(&[self.topic])).await;
                attempt += 1;
            }
        }
    }

    fn fail(&mut self, partition: i32, batch: &Pending, e: &ClientError) {
        let n = batch.records.len() as u64;
        self.failed += n;
        let lines = if batch.first_line == batch.last_line {
            format!("line {}", batch.first_line)
        } else {
            format!("lines {}-{}", batch.first_line, batch.last_line)
        };
        eprintln!(
            "osprey: failed to produce {n} record(s) ({lines}) to {}/{partition}: {e}",
            self.topic
        );
        if let Some(h) = super::hint_for(e) {
            eprintln!("  hint: {h}");
        }
    }
}

/// The progress line of `osprey produce`.
fn progress_text(p: &Producer<'_>) -> String {
    if p.failed > 0 {
        format!(
            "produced {} record(s) to {}, {} failed",
            p.produced, p.topic, p.failed
        )
    } else {
        format!("produced {} record(s) to {}", p.produced, p.topic)
    }
}

/// Runs `osprey produce`.
pub fn main(args: ProduceArgs) -> CliResult {
    let acks = Acks::parse(&args.acks).map_err(|_| {
        CliError::new(
            format!("--acks {:?} is not an acknowledgement mode", args.acks),
            "use --acks 0, 1 or all",
        )
    })?;
    let compression = parse_compression(&args.compression).map_err(|_| {
        CliError::new(
            format!("--compression {:?} is not a codec", args.compression),
            "use none, gzip, snappy, lz4 or zstd",
        )
    })?;
    if args.idempotence && acks != Acks::All {
        return Err(CliError::new(
            "--idempotence needs acks=all",
            "drop --acks or pass --acks all",
        ));
    }
    if args.batch_size == 0 {
        return Err(CliError::new(
            "--batch-size 0",
            "give a positive number of records",
        ));
    }
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = parse_key_value(h, "--header")?;
        headers.push((k, Bytes::from(v)));
    }
    let rx = spawn_reader(args.file.clone())?;
    let out = args.common.output;
    let common = args.common.clone();
    super::run(&common, move |client| async move {
        produce(&client, &args, acks, compression, headers, rx, out).await
    })
}

async fn produce(
    client: &Client,
    args: &ProduceArgs,
    acks: Acks,
    compression: Compression,
    headers: Vec<(String, Bytes)>,
    mut rx: tokio::sync::mpsc::Receiver<Input>,
    out: Output,
) -> CliResult {
    let topic = args.topic.as_str();
    let md = client
        .metadata(Some(&[topic]))
        .await
        .map_err(|e| CliError::client(format_args!("looking up {topic}"), e))?;
    let partitions = match md.topics.iter().find(|t| t.name == topic) {
        Some(t) if t.error_code == 0 && !t.partitions.is_empty() => t.partitions.len() as i32,
        Some(t) if t.error_code != 0 => {
            return Err(CliError::new(
                format!("topic {topic}: {}", super::kafka_error(t.error_code)),
                format!("create it first: osprey topics create {topic}"),
            ));
        }
        _ => {
            return Err(CliError::new(
                format!("topic {topic} has no partitions"),
                format!("create it first: osprey topics create {topic}"),
            ));
        }
    };
    if let Some(p) = args.partition
        && !(0..partitions).contains(&p)
    {
        return Err(CliError::new(
            format!(
                "--partition {p}: {topic} has partitions 0..{}",
                partitions - 1
            ),
            "pick an existing partition, or grow the topic with `osprey topics add-partitions`",
        ));
    }
    let identity = if args.idempotence {
        Some(
            client
                .init_producer_id()
                .await
                .map_err(|e| CliError::client("getting a producer id (InitProducerId)", e))?,
        )
    } else {
        None
    };
    let mut producer = Producer {
        client,
        topic,
        acks,
        compression,
        identity,
        sequences: HashMap::new(),
        produced: 0,
        failed: 0,
        written: BTreeMap::new(),
    };
    let sep = args.key_separator.as_deref().map(str::as_bytes);
    let mut progress = super::Progress::new(&args.common, false);
    let mut sticky: i32 = 0;
    let mut pending: BTreeMap<i32, Pending> = BTreeMap::new();
    let mut input_error = None;
    'input: while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Take what is already queued, without waiting, up to a full batch.
        while let Some(item) = next.take() {
            let (number, line) = match item {
                Input::Line(n, l) => (n, l),
                Input::Error(e) => {
                    input_error = Some(e);
                    break 'input;
                }
            };
            let (key, value) = split_key(line, sep);
            let partition = match (args.partition, &key) {
                (Some(p), _) => p,
                (None, Some(k)) => partition_for_key(k, partitions),
                (None, None) => sticky,
            };
            let size = key.as_ref().map_or(0, Bytes::len) + value.len();
            let batch = pending.entry(partition).or_insert_with(|| Pending {
                records: Vec::new(),
                bytes: 0,
                first_line: number,
                last_line: number,
            });
            batch.records.push(ProducerRecord {
                key,
                value: Some(value),
                headers: headers.clone(),
            });
            batch.bytes += size;
            batch.last_line = number;
            if batch.records.len() >= args.batch_size || batch.bytes >= BATCH_MAX_BYTES {
                break;
            }
            next = rx.try_recv().ok();
        }
        producer.flush(&mut pending).await;
        sticky = (sticky + 1) % partitions;
        progress.update(|| progress_text(&producer));
    }
    producer.flush(&mut pending).await;
    progress.finish();
    match out {
        Output::Json => print_json(&json!({
            "topic": topic,
            "produced": producer.produced,
            "failed": producer.failed,
            "partitions": producer.written.iter().map(|(p, (n, last))| json!({
                "partition": p, "records": n, "last_offset": last,
            })).collect::<Vec<_>>(),
        }))?,
        Output::Table => write_stdout(format_args!(
            "produced {} record(s) to {topic}{}\n",
            producer.produced,
            if producer.failed > 0 {
                format!(", {} failed", producer.failed)
            } else {
                String::new()
            }
        ))?,
    }
    if let Some(e) = input_error {
        return Err(CliError::new(
            e,
            "the lines before it were produced; check the input",
        ));
    }
    if producer.failed > 0 {
        return Err(CliError::new(
            format!(
                "{} of {} record(s) were not produced (see above)",
                producer.failed,
                producer.failed + producer.produced
            ),
            "fix the cause above and produce the failed lines again",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves murmur2 matches Kafka's Utils.murmur2 on the vectors of Kafka's own UtilsTest,
    // so keys land on the partitions Kafka's clients choose.
    #[test]
    fn murmur2_matches_kafka() {
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    // Proves a line splits at the first separator only, and a line without one has no key.
    #[test]
    fn key_split() {
        let (k, v) = split_key(b"a::b::c".to_vec(), Some(b"::"));
        assert_eq!(k.as_deref(), Some(&b"a"[..]));
        assert_eq!(&v[..], b"b::c");
        let (k, v) = split_key(b"plain".to_vec(), Some(b":"));
        assert!(k.is_none());
        assert_eq!(&v[..], b"plain");
    }
}
