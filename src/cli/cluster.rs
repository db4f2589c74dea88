//! `osprey cluster info`: the cluster id, the controller, every node (host, port, rack, and
//! for osprey its host id and shard) from DescribeCluster (Metadata on older brokers), and
//! the Kafka API versions the bootstrap node advertises. Runs in the CLI process.

use clap::{Args, Subcommand};
use kafka_protocol::messages::ApiKey;
use serde_json::json;

use super::{CliError, CliResult, Common, Output, Table, print_json, write_stdout};

use osprey::metadata::NODES_PER_HOST;

/// `osprey cluster`.
#[derive(Args, Debug)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub action: ClusterAction,
}

/// What `osprey cluster` does.
#[derive(Subcommand, Debug)]
pub enum ClusterAction {
    /// Cluster id, controller, nodes and the API versions the broker speaks.
    Info,
}

/// Runs `osprey cluster`.
pub fn main(args: ClusterArgs) -> CliResult {
    let out = args.common.output;
    let ClusterAction::Info = args.action;
    let common = args.common.clone();
    super::run(&common, move |client| async move {
        let c = client
            .describe_cluster()
            .await
            .map_err(|e| CliError::client("describing the cluster", e))?;
        let mut apis: Vec<(i16, i16, i16)> = client
            .broker_versions()
            .await
            .map_err(|e| CliError::client("reading the broker's API versions", e))?
            .into_iter()
            .map(|(k, r)| (k, r.min, r.max))
            .collect();
        apis.sort();
        let api_name = |k: i16| {
            ApiKey::try_from(k).map_or_else(|_| format!("ApiKey({k})"), |a| format!("{a:?}"))
        };
        match out {
            Output::Json => print_json(&json!({
                "cluster_id": c.cluster_id,
                "controller_id": c.controller_id,
                "nodes": c.nodes.iter().map(|n| json!({
                    "node_id": n.node_id,
                    "host": n.host,
                    "port": n.port,
                    "rack": n.rack,
                    "fenced": n.fenced,
                    "osprey_host_id": n.node_id / NODES_PER_HOST,
                    "osprey_shard": n.node_id % NODES_PER_HOST,
                })).collect::<Vec<_>>(),
                "client_version": env!("CARGO_PKG_VERSION"),
                "api_versions": apis.iter().map(|&(k, lo, hi)| json!({
                    "api_key": k, "name": api_name(k), "min": lo, "max": hi,
                })).collect::<Vec<_>>(),
            })),
            Output::Table => {
                let mut text = format!(
                    "cluster id: {}\ncontroller: {}\nclient: osprey {}\n\n",
                    c.cluster_id,
                    c.controller_id,
                    env!("CARGO_PKG_VERSION")
                );
                let mut t =
                    Table::new(&["NODE", "HOST", "PORT", "RACK", "HOST-ID", "SHARD", "STATUS"]);
                for n in &c.nodes {
                    let mut status = if n.fenced { "fenced" } else { "up" }.to_owned();
                    if n.node_id == c.controller_id {
                        status.push_str(",controller");
                    }
                    t.row(vec![
                        n.node_id.to_string(),
                        n.host.clone(),
                        n.port.to_string(),
                        n.rack.clone().unwrap_or_else(|| "-".into()),
                        (n.node_id / NODES_PER_HOST).to_string(),
                        (n.node_id % NODES_PER_HOST).to_string(),
                        status,
                    ]);
                }
                text.push_str(&t.render());
                let mut a = Table::new(&["API", "KEY", "VERSIONS"]);
                for &(k, lo, hi) in &apis {
                    a.row(vec![api_name(k), k.to_string(), format!("{lo}-{hi}")]);
                }
                text.push('\n');
                text.push_str(&a.render());
                write_stdout(format_args!("{text}"))
            }
        }
    })
}
