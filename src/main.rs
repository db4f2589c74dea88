//! The `osprey` binary: `osprey serve` runs the broker (the default when no subcommand
//! is given).

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
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (default: 127.0.0.1:9092, data in ./osprey-data, one shard per CPU).
    Serve(osprey::config::ServeArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Serve(a)) => a,
        None => osprey::config::ServeArgs::default(),
    };
    let config = match osprey::config::BrokerConfig::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("osprey: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = osprey::server::run(config) {
        eprintln!("osprey: {e}");
        std::process::exit(1);
    }
}
