//! The `osprey` binary: `osprey serve` runs the broker (the default when no subcommand is
//! given); `osprey topics ...` administers a running broker through the project's Kafka
//! client (the same one loadgen uses); `osprey probe` measures this host's limits;
//! `osprey tune` checks and sets host knobs and `osprey iotune` measures a disk
//! (`osprey::ops`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "osprey",
    version,
    about = "A Kafka-compatible, thread-per-core message broker on io_uring"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Log lines on stderr as text or as one JSON object per line (RUST_LOG filters).
    #[arg(long, global = true, value_enum, default_value_t = osprey::ops::LogFormat::Text)]
    log_format: osprey::ops::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (default: 127.0.0.1:9092, data in ./osprey-data, one shard per CPU).
    Serve(Box<osprey::config::ServeArgs>),
    /// List, create or delete topics on a running broker (any Kafka-compatible broker).
    Topics {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// Measure this host's limits: O_DIRECT write bandwidth and fdatasync rate of a
    /// directory, and loopback TCP bandwidth.
    Probe {
        /// Directory on the disk to measure (a temporary file is written and removed).
        #[arg(long, default_value = "osprey-data")]
        dir: PathBuf,
        /// Bytes per bandwidth probe.
        #[arg(long, default_value_t = 256 << 20)]
        bytes: u64,
    },
    /// Check this host's knobs for the broker (memlock, open files, io_uring, governor,
    /// huge pages, swappiness, disk scheduler, backlogs, clocksource, IRQs), set them, or
    /// print the commands.
    Tune(osprey::ops::TuneArgs),
    /// Measure a directory's disk (O_DIRECT bandwidth by block size and queue depth,
    /// fdatasync and O_DSYNC latency) and write DIR/iotune.json.
    Iotune(osprey::ops::IotuneArgs),
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Topics with their partition count and leaders.
    List,
    /// Every partition of the topics (all when none named): leader, replicas and ISR.
    Describe { names: Vec<String> },
    /// Create a topic: `osprey topics create NAME --partitions 8 --config retention.ms=60000`.
    Create {
        name: String,
        #[arg(long, default_value_t = -1)]
        partitions: i32,
        /// Replicas per partition (-1: the cluster's default.replication.factor).
        #[arg(long, default_value_t = -1)]
        replication_factor: i16,
        /// Topic config as name=value; repeatable.
        #[arg(long = "config")]
        configs: Vec<String>,
    },
    /// Delete topics.
    Delete { names: Vec<String> },
}

/// Admin commands wait at most this long for the broker.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

fn topics(bootstrap: String, action: TopicsAction) -> Result<(), String> {
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    ex.run(async move {
        use osprey::client::{Client, ClientConfig, NewTopic};
        let client = Client::connect(&bootstrap, ClientConfig::default())
            .await
            .map_err(|e| format!("cannot reach {bootstrap}: {e}"))?;
        match action {
            TopicsAction::List => {
                let md = client.metadata(None).await.map_err(|e| e.to_string())?;
                for t in md.topics {
                    let leaders: Vec<String> = t
                        .partitions
                        .iter()
                        .map(|p| format!("{}:{}", p.partition, p.leader))
                        .collect();
                    println!(
                        "{}\tpartitions={}\tleaders(partition:node)={}",
                        t.name,
                        t.partitions.len(),
                        leaders.join(",")
                    );
                }
                Ok(())
            }
            TopicsAction::Describe { names } => {
                let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
                let md = client
                    .metadata((!wanted.is_empty()).then_some(&wanted[..]))
                    .await
                    .map_err(|e| e.to_string())?;
                let node_list = |v: &[i32]| {
                    v.iter()
                        .map(|n| n.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                println!("TOPIC\tPARTITION\tLEADER\tREPLICAS\tISR");
                for t in md.topics {
                    if t.error_code != 0 {
                        println!("{}\terror {}", t.name, t.error_code);
                        continue;
                    }
                    for p in &t.partitions {
                        println!(
                            "{}\t{}\t{}\t{}\t{}",
                            t.name,
                            p.partition,
                            p.leader,
                            node_list(&p.replicas),
                            node_list(&p.isr)
                        );
                    }
                }
                Ok(())
            }
            TopicsAction::Create {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                let mut parsed = Vec::new();
                for c in configs {
                    let (k, v) = c
                        .split_once('=')
                        .ok_or_else(|| format!("--config {c}: expected name=value"))?;
                    parsed.push((k.to_string(), v.to_string()));
                }
                let t = NewTopic {
                    name: name.clone(),
                    partitions,
                    replication_factor,
                    configs: parsed,
                };
                let out = client
                    .create_topics(&[t], ADMIN_TIMEOUT_MS)
                    .await
                    .map_err(|e| e.to_string())?;
                for o in out {
                    o.result.map_err(|e| format!("create {}: {e}", o.name))?;
                    println!("created {}", o.name);
                }
                Ok(())
            }
            TopicsAction::Delete { names } => {
                let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                let out = client
                    .delete_topics(&refs, ADMIN_TIMEOUT_MS)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut failed = Vec::new();
                for o in out {
                    match o.result {
                        Ok(()) => println!("deleted {}", o.name),
                        Err(e) => failed.push(format!("{}: {e}", o.name)),
                    }
                }
                if failed.is_empty() {
                    Ok(())
                } else {
                    Err(failed.join("; "))
                }
            }
        }
    })
}

fn probe(dir: PathBuf, bytes: u64) -> Result<(), String> {
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let disk = tuning::probe_disk(&dir, bytes)
        .map_err(|e| format!("disk probe of {}: {e}", dir.display()))?;
    let tcp = tuning::probe_loopback_tcp(bytes).map_err(|e| format!("loopback probe: {e}"))?;
    println!(
        "O_DIRECT sequential write: {:.0} MB/s ({})",
        disk.direct_write_bytes_per_sec / 1e6,
        dir.display()
    );
    println!(
        "4 KiB write + fdatasync:   {:.0} ops/s, p50 {} us, p99 {} us",
        disk.fdatasync_ops_per_sec, disk.fdatasync_p50_us, disk.fdatasync_p99_us
    );
    println!("loopback TCP (one stream): {:.0} MB/s", tcp / 1e6);
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    osprey::ops::init_logging(cli.log_format);
    let result = match cli.command {
        Some(Command::Tune(args)) => match osprey::ops::tune(args) {
            Ok(code) => std::process::exit(code),
            Err(e) => Err(e),
        },
        Some(Command::Iotune(args)) => osprey::ops::iotune(args),
        Some(Command::Topics { bootstrap, action }) => topics(bootstrap, action),
        Some(Command::Probe { dir, bytes }) => probe(dir, bytes),
        serve => {
            let args = match serve {
                Some(Command::Serve(a)) => *a,
                _ => osprey::config::ServeArgs::default(),
            };
            let config = match osprey::config::BrokerConfig::from_args(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("osprey: {e}");
                    std::process::exit(2);
                }
            };
            osprey::server::run(config).map_err(|e| e.to_string())
        }
    };
    if let Err(e) = result {
        eprintln!("osprey: {e}");
        std::process::exit(1);
    }
}
