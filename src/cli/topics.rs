//! `osprey topics list|describe|create|delete|alter|add-partitions`, as kafka-topics.sh and
//! kafka-configs.sh do it: Metadata, ListOffsets, DescribeLogDirs and DescribeConfigs for
//! describe; CreateTopics, DeleteTopics, IncrementalAlterConfigs and CreatePartitions for
//! changes. Runs in the CLI process.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use osprey_client::{
    Client, ClientError, ConfigChange, NewTopic, OffsetSpec, TopicMetadata, config_source_name,
};
use serde_json::json;

use super::{
    ADMIN_TIMEOUT_MS, CliError, CliResult, Common, Output, Table, kafka_error, node_list,
    parse_key_value, print_json, write_stdout,
};

/// `osprey topics`.
#[derive(Args, Debug)]
pub struct TopicsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub action: TopicsAction,
}

/// What `osprey topics` does.
#[derive(Subcommand, Debug)]
pub enum TopicsAction {
    /// Topics with their partition count and replication factor.
    List,
    /// Every partition of the topics (all when none named): leader, replicas, ISR, log
    /// start and end offsets and size; then the topic's configs with their source.
    Describe { names: Vec<String> },
    /// Create a topic: `osprey topics create NAME --partitions 8 --config retention.ms=60000`.
    Create {
        name: String,
        /// Partitions (-1: the broker's num.partitions).
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
    /// Change a topic's configs (IncrementalAlterConfigs): `--set retention.ms=60000`
    /// sets one, `--delete retention.ms` returns it to its default; both repeatable.
    Alter {
        name: String,
        /// Config to set, name=value; repeatable.
        #[arg(long = "set")]
        set: Vec<String>,
        /// Config to remove (back to the default); repeatable.
        #[arg(long = "delete")]
        delete: Vec<String>,
    },
    /// Grow a topic to `--count` partitions in total (CreatePartitions).
    AddPartitions {
        name: String,
        /// The new total number of partitions (more than today's).
        #[arg(long)]
        count: i32,
    },
}

/// Runs `osprey topics`.
pub fn main(args: TopicsArgs) -> CliResult {
    let out = args.common.output;
    let common = args.common.clone();
    super::run(&common, move |client| async move {
        let mut progress = super::Progress::new(&args.common, false);
        match args.action {
            TopicsAction::List => list(&client, out).await,
            TopicsAction::Describe { names } => describe(&client, &names, out).await,
            TopicsAction::Create {
                name,
                partitions,
                replication_factor,
                configs,
            } => {
                create(
                    &client,
                    name,
                    partitions,
                    replication_factor,
                    &configs,
                    out,
                    &mut progress,
                )
                .await
            }
            TopicsAction::Delete { names } => delete(&client, &names, out, &mut progress).await,
            TopicsAction::Alter { name, set, delete } => {
                alter(&client, &name, &set, &delete, out).await
            }
            TopicsAction::AddPartitions { name, count } => {
                add_partitions(&client, &name, count, out).await
            }
        }
    })
}

fn replication_factor(t: &TopicMetadata) -> usize {
    t.partitions
        .iter()
        .map(|p| p.replicas.len())
        .max()
        .unwrap_or(0)
}

async fn list(client: &Client, out: Output) -> CliResult {
    let md = client
        .metadata(None)
        .await
        .map_err(|e| CliError::client("listing topics (Metadata)", e))?;
    let mut topics = md.topics;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    match out {
        Output::Json => print_json(&json!(
            topics
                .iter()
                .map(|t| json!({
                    "name": t.name,
                    "partitions": t.partitions.len(),
                    "replication_factor": replication_factor(t),
                }))
                .collect::<Vec<_>>()
        )),
        Output::Table => {
            let mut table = Table::new(&["TOPIC", "PARTITIONS", "REPLICATION"]);
            for t in &topics {
                table.row(vec![
                    t.name.clone(),
                    t.partitions.len().to_string(),
                    replication_factor(t).to_string(),
                ]);
            }
            table.print()
        }
    }
}

/// Log start, log end and size of one partition (None: the broker did not say).
#[derive(Default, Clone, Copy)]
struct PartitionFigures {
    log_start: Option<i64>,
    log_end: Option<i64>,
    size_bytes: Option<i64>,
}

/// Log offsets and sizes of a topic's partitions. A partition without a leader, or a node
/// that does not answer, leaves its figures unknown ("-") with a warning: describe is what
/// an operator runs when something is wrong, so it shows what it can.
async fn partition_figures(client: &Client, t: &TopicMetadata) -> BTreeMap<i32, PartitionFigures> {
    let mut figures: BTreeMap<i32, PartitionFigures> = t
        .partitions
        .iter()
        .map(|p| (p.partition, PartitionFigures::default()))
        .collect();
    let led: Vec<i32> = t
        .partitions
        .iter()
        .filter(|p| p.leader >= 0)
        .map(|p| p.partition)
        .collect();
    for (spec, start) in [(OffsetSpec::Earliest, true), (OffsetSpec::Latest, false)] {
        let offsets = match client.list_offsets(&t.name, &led, spec).await {
            Ok(o) => o,
            Err(e) => {
                eprintln!("osprey: warning: ListOffsets of {}: {e}", t.name);
                continue;
            }
        };
        for o in offsets {
            match (o.offset, figures.get_mut(&o.partition)) {
                (Ok(off), Some(f)) if start => f.log_start = Some(off),
                (Ok(off), Some(f)) => f.log_end = Some(off),
                (Err(e), _) => eprintln!("osprey: warning: {e}"),
                _ => {}
            }
        }
    }
    // Each node reports the replicas it holds: ask every leader for its partitions' sizes.
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in &t.partitions {
        if p.leader >= 0 {
            by_leader.entry(p.leader).or_default().push(p.partition);
        }
    }
    for (node, ps) in by_leader {
        match client.describe_log_dirs_on(node, &t.name, &ps).await {
            Ok(sizes) => {
                for s in sizes {
                    if let Some(f) = figures.get_mut(&s.partition) {
                        f.size_bytes = Some(s.size_bytes);
                    }
                }
            }
            // Sizes are optional: a broker without DescribeLogDirs still gets a description.
            Err(ClientError::UnsupportedApi { .. }) => {}
            Err(e) => eprintln!(
                "osprey: warning: DescribeLogDirs of {} on node {node}: {e}",
                t.name
            ),
        }
    }
    figures
}

/// Bytes for people: 1023 B, 1.5 KiB, 3.2 MiB.
pub fn human_bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |x| x.to_string())
}

async fn describe(client: &Client, names: &[String], out: Output) -> CliResult {
    let wanted: Vec<&str> = names.iter().map(String::as_str).collect();
    let md = client
        .metadata((!wanted.is_empty()).then_some(&wanted[..]))
        .await
        .map_err(|e| CliError::client("describing topics (Metadata)", e))?;
    let mut topics = md.topics;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(t) = topics.iter().find(|t| t.error_code != 0) {
        let hint = if t.error_code == 3 {
            "check the name with `osprey topics list`"
        } else {
            "retry in a moment; the topic may be changing"
        };
        return Err(CliError::new(
            format!("topic {}: {}", t.name, kafka_error(t.error_code)),
            hint,
        ));
    }
    let mut docs = Vec::new();
    let mut text = String::new();
    for t in &topics {
        let figures = partition_figures(client, t).await;
        let configs = match client.describe_topic_configs(&t.name).await {
            Ok(c) => c,
            Err(ClientError::UnsupportedApi { .. }) => Vec::new(),
            Err(e) => {
                return Err(CliError::client(
                    format_args!("DescribeConfigs of {}", t.name),
                    e,
                ));
            }
        };
        match out {
            Output::Json => docs.push(json!({
                "name": t.name,
                "partitions": t.partitions.iter().map(|p| {
                    let f = figures.get(&p.partition).copied().unwrap_or_default();
                    json!({
                        "partition": p.partition,
                        "leader": p.leader,
                        "replicas": p.replicas,
                        "isr": p.isr,
                        "log_start_offset": f.log_start,
                        "log_end_offset": f.log_end,
                        "size_bytes": f.size_bytes,
                    })
                }).collect::<Vec<_>>(),
                "configs": configs.iter().map(|c| json!({
                    "name": c.name,
                    "value": c.value,
                    "source": config_source_name(c.source),
                    "read_only": c.read_only,
                    "sensitive": c.sensitive,
                })).collect::<Vec<_>>(),
            })),
            Output::Table => {
                text.push_str(&format!(
                    "Topic: {}  partitions: {}  replication: {}\n",
                    t.name,
                    t.partitions.len(),
                    replication_factor(t)
                ));
                let mut table = Table::new(&[
                    "PARTITION",
                    "LEADER",
                    "REPLICAS",
                    "ISR",
                    "LOG-START",
                    "LOG-END",
                    "SIZE",
                ]);
                for p in &t.partitions {
                    let f = figures.get(&p.partition).copied().unwrap_or_default();
                    table.row(vec![
                        p.partition.to_string(),
                        p.leader.to_string(),
                        node_list(&p.replicas),
                        node_list(&p.isr),
                        opt(f.log_start),
                        opt(f.log_end),
                        f.size_bytes.map_or_else(|| "-".into(), human_bytes),
                    ]);
                }
                text.push_str(&table.render());
                if !configs.is_empty() {
                    let mut ct = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
                    for c in &configs {
                        let value = if c.sensitive {
                            "(sensitive)".to_owned()
                        } else {
                            c.value.clone().unwrap_or_else(|| "-".into())
                        };
                        ct.row(vec![
                            c.name.clone(),
                            value,
                            config_source_name(c.source).to_owned(),
                        ]);
                    }
                    text.push('\n');
                    text.push_str(&ct.render());
                }
                text.push('\n');
            }
        }
    }
    match out {
        Output::Json => print_json(&json!(docs)),
        Output::Table => write_stdout(format_args!("{text}")),
    }
}

async fn create(
    client: &Client,
    name: String,
    partitions: i32,
    replication_factor: i16,
    configs: &[String],
    out: Output,
    progress: &mut super::Progress,
) -> CliResult {
    let mut parsed = Vec::new();
    for c in configs {
        parsed.push(parse_key_value(c, "--config")?);
    }
    let what = format!("creating {name} ({partitions} partition(s), waiting for leaders)");
    let t = NewTopic {
        name,
        partitions,
        replication_factor,
        configs: parsed,
    };
    let outcomes = progress
        .during(&what, client.create_topics(&[t], ADMIN_TIMEOUT_MS))
        .await
        .map_err(|e| CliError::client("CreateTopics", e))?;
    progress.finish();
    for o in outcomes {
        o.result
            .map_err(|e| CliError::client(format_args!("creating {}", o.name), e))?;
        match out {
            Output::Json => print_json(&json!({"created": o.name}))?,
            Output::Table => write_stdout(format_args!("created {}\n", o.name))?,
        }
    }
    Ok(())
}

async fn delete(
    client: &Client,
    names: &[String],
    out: Output,
    progress: &mut super::Progress,
) -> CliResult {
    if names.is_empty() {
        return Err(CliError::new(
            "no topic named",
            "name the topics to delete: osprey topics delete NAME...",
        ));
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let outcomes = progress
        .during(
            &format!("deleting {} topic(s)", refs.len()),
            client.delete_topics(&refs, ADMIN_TIMEOUT_MS),
        )
        .await
        .map_err(|e| CliError::client("DeleteTopics", e))?;
    progress.finish();
    let mut failed = Vec::new();
    let mut deleted = Vec::new();
    for o in outcomes {
        match o.result {
            Ok(()) => deleted.push(o.name),
            Err(e) => failed.push(CliError::client(format_args!("deleting {}", o.name), e)),
        }
    }
    match out {
        Output::Json => print_json(&json!({"deleted": deleted}))?,
        Output::Table => {
            for d in &deleted {
                write_stdout(format_args!("deleted {d}\n"))?;
            }
        }
    }
    super::failures(failed, names.len(), "deletions")
}

async fn alter(
    client: &Client,
    name: &str,
    set: &[String],
    delete: &[String],
    out: Output,
) -> CliResult {
    if set.is_empty() && delete.is_empty() {
        return Err(CliError::new(
            "nothing to change",
            "give --set name=value and/or --delete name",
        ));
    }
    let mut changes = Vec::new();
    for s in set {
        let (k, v) = parse_key_value(s, "--set")?;
        changes.push(ConfigChange::Set(k, v));
    }
    changes.extend(delete.iter().map(|k| ConfigChange::Delete(k.clone())));
    client
        .alter_topic_configs(name, &changes)
        .await
        .map_err(|e| CliError::client(format_args!("altering the configs of {name}"), e))?;
    match out {
        Output::Json => print_json(&json!({"topic": name, "set": set, "deleted": delete})),
        Output::Table => {
            let mut parts = Vec::new();
            if !set.is_empty() {
                parts.push(format!("set {}", set.join(", ")));
            }
            if !delete.is_empty() {
                parts.push(format!("deleted {}", delete.join(", ")));
            }
            write_stdout(format_args!("altered {name}: {}\n", parts.join("; ")))
        }
    }
}

async fn add_partitions(client: &Client, name: &str, count: i32, out: Output) -> CliResult {
    client
        .create_partitions(name, count, ADMIN_TIMEOUT_MS)
        .await
        .map_err(|e| {
            CliError::client(
                format_args!("growing {name} to {count} partitions (CreatePartitions)"),
                e,
            )
        })?;
    match out {
        Output::Json => print_json(&json!({"topic": name, "partitions": count})),
        Output::Table => write_stdout(format_args!("{name} now has {count} partitions\n")),
    }
}
