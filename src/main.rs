//! The `osprey` binary: `osprey serve` runs the broker (the default when no subcommand is
//! given); `osprey topics|produce|consume|groups|cluster` work against any running
//! Kafka-compatible broker through the project's Kafka client (see `cli/`); `osprey probe`
//! measures this host's limits; `osprey tune` checks and sets host knobs and `osprey
//! iotune` measures a disk (`osprey::ops`); `osprey users ...` (SCRAM credentials) and
//! `osprey acls ...` administer security (`osprey users create --data-dir` writes the first
//! SCRAM user into a stopped broker's data directory).

mod cli;

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
    /// List, describe, create, delete, alter topics and add partitions (any
    /// Kafka-compatible broker).
    Topics(cli::topics::TopicsArgs),
    /// Write stdin's (or a file's) lines to a topic, one record each.
    Produce(cli::produce::ProduceArgs),
    /// Print a topic's records, alone or as a member of a consumer group.
    Consume(cli::consume::ConsumeArgs),
    /// List, describe (lag), delete consumer groups; reset or delete their offsets.
    Groups(cli::groups::GroupsArgs),
    /// The cluster's id, controller, nodes and API versions.
    Cluster(cli::cluster::ClusterArgs),
    /// SCRAM users: create one in a data directory before the broker's first start
    /// (`--data-dir`), or create, list and delete them on a running broker.
    Users {
        #[command(subcommand)]
        action: cli::users::UsersAction,
    },
    /// ACLs of the authorizer (`serve --authorizer acl`) on a running broker.
    Acls {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Kafka client properties file (TLS, SASL) for the broker's listener.
        #[arg(long, value_name = "FILE")]
        command_config: Option<PathBuf>,
        #[command(subcommand)]
        action: cli::acls::AclsAction,
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
        Some(Command::Topics(a)) => cli::topics::main(a).map_err(|e| e.to_string()),
        Some(Command::Produce(a)) => cli::produce::main(a).map_err(|e| e.to_string()),
        Some(Command::Consume(a)) => cli::consume::main(a).map_err(|e| e.to_string()),
        Some(Command::Groups(a)) => cli::groups::main(a).map_err(|e| e.to_string()),
        Some(Command::Cluster(a)) => cli::cluster::main(a).map_err(|e| e.to_string()),
        Some(Command::Users { action }) => cli::users::main(action),
        Some(Command::Acls {
            bootstrap,
            command_config,
            action,
        }) => cli::acls::main(bootstrap, command_config, action),
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
