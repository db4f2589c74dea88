//! `osprey groups list|describe|delete|reset-offsets|delete-offsets`, as
//! kafka-consumer-groups.sh does it: ListGroups on every node; DescribeGroups, OffsetFetch and
//! ListOffsets for state, members, committed offsets and lag; DeleteGroups; OffsetCommit of
//! computed offsets for an empty group (a dry run unless `--execute`); OffsetDelete. Runs in
//! the CLI process.

use std::collections::{BTreeMap, BTreeSet};

use clap::{ArgGroup, Args, Subcommand};
use osprey_client::{Client, CommittedPartition, GroupDescription, OffsetSpec, decode_assignment};
use serde_json::json;

use super::{CliError, CliResult, Common, Output, Table, print_json, write_stdout};

/// `osprey groups`.
#[derive(Args, Debug)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub action: GroupsAction,
}

/// What `osprey groups` does.
#[derive(Subcommand, Debug)]
pub enum GroupsAction {
    /// Every group of every node, with its state and protocol type.
    List,
    /// State, protocol, members with host and assignment, and per partition the committed
    /// offset, log end offset and lag (with the total).
    Describe {
        /// Groups to describe.
        groups: Vec<String>,
        /// Describe every group.
        #[arg(long)]
        all_groups: bool,
    },
    /// Delete groups (they must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Move an empty group's committed offsets; prints the plan, and applies it only with
    /// --execute.
    #[command(group(
        ArgGroup::new("to")
            .required(true)
            .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "to_timestamp", "shift_by"])
    ))]
    ResetOffsets {
        group: String,
        /// TOPIC (every partition) or TOPIC:P,P...; repeatable.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]")]
        topics: Vec<String>,
        /// Every topic the group has committed offsets for.
        #[arg(long)]
        all_topics: bool,
        /// To the log start offset.
        #[arg(long)]
        to_earliest: bool,
        /// To the log end offset.
        #[arg(long)]
        to_latest: bool,
        /// To this offset (kept inside the log's range).
        #[arg(long, value_name = "N")]
        to_offset: Option<i64>,
        /// To the first record at or after this time: YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]
        /// (UTC when no zone is given).
        #[arg(long, value_name = "DATETIME")]
        to_datetime: Option<String>,
        /// To the first record at or after this time (ms since the epoch).
        #[arg(long, value_name = "MS")]
        to_timestamp: Option<i64>,
        /// By N from the committed offset (negative: back).
        #[arg(long, value_name = "N", allow_hyphen_values = true)]
        shift_by: Option<i64>,
        /// Apply the plan (without it nothing changes).
        #[arg(long)]
        execute: bool,
        /// Only print the plan (the default; Kafka's flag).
        #[arg(long, conflicts_with = "execute")]
        dry_run: bool,
    },
    /// Delete a group's committed offsets of some topics (OffsetDelete).
    DeleteOffsets {
        group: String,
        /// TOPIC (every partition) or TOPIC:P,P...; repeatable.
        #[arg(long = "topic", value_name = "TOPIC[:PARTITIONS]", required = true)]
        topics: Vec<String>,
    },
}

/// Runs `osprey groups`.
pub fn main(args: GroupsArgs) -> CliResult {
    let out = args.common.output;
    let common = args.common.clone();
    super::run(&common, move |client| async move {
        let mut progress = super::Progress::new(&args.common, false);
        match args.action {
            GroupsAction::List => list(&client, out).await,
            GroupsAction::Describe { groups, all_groups } => {
                describe(&client, groups, all_groups, out).await
            }
            GroupsAction::Delete { groups } => delete(&client, &groups, out).await,
            GroupsAction::ResetOffsets {
                group,
                topics,
                all_topics,
                to_earliest,
                to_latest,
                to_offset,
                to_datetime,
                to_timestamp,
                shift_by,
                execute,
                dry_run: _,
            } => {
                let target = if to_earliest {
                    Target::Earliest
                } else if to_latest {
                    Target::Latest
                } else if let Some(o) = to_offset {
                    Target::Offset(o)
                } else if let Some(d) = to_datetime {
                    Target::Timestamp(parse_datetime(&d)?)
                } else if let Some(t) = to_timestamp {
                    Target::Timestamp(t)
                } else if let Some(n) = shift_by {
                    Target::Shift(n)
                } else {
                    return Err(CliError::new(
                        "no target offset",
                        "give one of --to-earliest, --to-latest, --to-offset, --to-datetime, \
                         --to-timestamp, --shift-by",
                    ));
                };
                let reset = Reset {
                    all_topics,
                    target,
                    execute,
                };
                reset_offsets(&client, &group, &topics, reset, out, &mut progress).await
            }
            GroupsAction::DeleteOffsets { group, topics } => {
                delete_offsets(&client, &group, &topics, out).await
            }
        }
    })
}

async fn all_groups(client: &Client) -> CliResult<Vec<osprey_client::ListedGroup>> {
    let md = client
        .metadata(Some(&[]))
        .await
        .map_err(|e| CliError::client("listing the nodes (Metadata)", e))?;
    let mut groups = Vec::new();
    for b in &md.brokers {
        groups.extend(
            client.list_groups_on(b.node_id).await.map_err(|e| {
                CliError::client(format_args!("ListGroups on node {}", b.node_id), e)
            })?,
        );
    }
    groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    groups.dedup_by(|a, b| a.group_id == b.group_id);
    Ok(groups)
}

async fn list(client: &Client, out: Output) -> CliResult {
    let groups = all_groups(client).await?;
    match out {
        Output::Json => print_json(&json!(
            groups
                .iter()
                .map(|g| json!({
                    "group": g.group_id,
                    "state": g.state,
                    "protocol_type": g.protocol_type,
                    "coordinator": g.coordinator,
                }))
                .collect::<Vec<_>>()
        )),
        Output::Table => {
            let mut t = Table::new(&["GROUP", "STATE", "PROTOCOL-TYPE", "COORDINATOR"]);
            for g in &groups {
                t.row(vec![
                    g.group_id.clone(),
                    g.state.clone(),
                    g.protocol_type.clone(),
                    g.coordinator.to_string(),
                ]);
            }
            t.print()
        }
    }
}

/// One partition's row of a group description.
struct LagRow {
    topic: String,
    partition: i32,
    committed: Option<i64>,
    log_end: Option<i64>,
    member: Option<usize>,
}

impl LagRow {
    fn lag(&self) -> Option<i64> {
        match (self.committed, self.log_end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        }
    }
}

/// Offsets (`spec`) of (topic, partition)s, asked per topic. A topic or partition that does
/// not answer (deleted, no leader now) is left out with a warning: `describe` shows "-" for
/// it and `reset-offsets` refuses to plan without it.
async fn log_ends(
    client: &Client,
    parts: &BTreeSet<(String, i32)>,
    spec: OffsetSpec,
) -> BTreeMap<(String, i32), i64> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let mut out = BTreeMap::new();
    for (t, ps) in by_topic {
        match client.list_offsets(t, &ps, spec).await {
            Ok(offsets) => {
                for o in offsets {
                    match o.offset {
                        Ok(off) => {
                            out.insert((t.to_owned(), o.partition), off);
                        }
                        Err(e) => eprintln!("osprey: warning: {e}"),
                    }
                }
            }
            Err(e) => eprintln!("osprey: warning: ListOffsets of {t}: {e}"),
        }
    }
    out
}

fn assignment_text(a: &BTreeMap<String, Vec<i32>>) -> String {
    if a.is_empty() {
        return "-".into();
    }
    a.iter()
        .map(|(t, ps)| format!("{t}:{}", super::node_list(ps)))
        .collect::<Vec<_>>()
        .join(" ")
}

async fn describe_one(
    client: &Client,
    group: &str,
) -> CliResult<(
    GroupDescription,
    Vec<BTreeMap<String, Vec<i32>>>,
    Vec<LagRow>,
)> {
    let desc = client
        .describe_group(group)
        .await
        .map_err(|e| CliError::client(format_args!("describing group {group}"), e))?;
    let committed: Vec<CommittedPartition> = client
        .offset_fetch(group, None)
        .await
        .map_err(|e| CliError::client(format_args!("reading {group}'s committed offsets"), e))?;
    if desc.state == "Dead" && desc.members.is_empty() && committed.is_empty() {
        return Err(CliError::new(
            format!("consumer group {group} does not exist"),
            "`osprey groups list` shows the groups",
        ));
    }
    let assignments: Vec<BTreeMap<String, Vec<i32>>> = desc
        .members
        .iter()
        .map(|m| match &m.partitions {
            // A consumer-protocol (KIP-848) member: its partitions as the coordinator said.
            Some(p) => p.clone(),
            None if desc.protocol_type == "consumer" => {
                decode_assignment(m.assignment.clone()).unwrap_or_default()
            }
            None => BTreeMap::new(),
        })
        .collect();
    let mut parts: BTreeSet<(String, i32)> = committed
        .iter()
        .map(|c| (c.topic.clone(), c.partition))
        .collect();
    for a in &assignments {
        for (t, ps) in a {
            parts.extend(ps.iter().map(|&p| (t.clone(), p)));
        }
    }
    let ends = log_ends(client, &parts, OffsetSpec::Latest).await;
    let rows = parts
        .into_iter()
        .map(|(topic, partition)| {
            let committed = committed
                .iter()
                .find(|c| c.topic == topic && c.partition == partition)
                .and_then(|c| c.offset.clone().ok())
                .filter(|&o| o >= 0);
            let member = assignments
                .iter()
                .position(|a| a.get(&topic).is_some_and(|ps| ps.contains(&partition)));
            LagRow {
                log_end: ends.get(&(topic.clone(), partition)).copied(),
                topic,
                partition,
                committed,
                member,
            }
        })
        .collect();
    Ok((desc, assignments, rows))
}

fn opt(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |x| x.to_string())
}

async fn describe(client: &Client, groups: Vec<String>, all: bool, out: Output) -> CliResult {
    let groups = if all {
        all_groups(client)
            .await?
            .into_iter()
            .map(|g| g.group_id)
            .collect()
    } else if groups.is_empty() {
        return Err(CliError::new(
            "no group named",
            "name groups (osprey groups describe G...) or pass --all-groups",
        ));
    } else {
        groups
    };
    let mut docs = Vec::new();
    let mut text = String::new();
    for g in &groups {
        let (desc, assignments, rows) = describe_one(client, g).await?;
        let total_lag: i64 = rows.iter().filter_map(LagRow::lag).sum();
        match out {
            Output::Json => docs.push(json!({
                "group": desc.group_id,
                "state": desc.state,
                "protocol_type": desc.protocol_type,
                "protocol": desc.protocol,
                "coordinator": desc.coordinator,
                "members": desc.members.iter().zip(&assignments).map(|(m, a)| json!({
                    "member_id": m.member_id,
                    "instance_id": m.instance_id,
                    "client_id": m.client_id,
                    "host": m.client_host,
                    "assignment": a,
                })).collect::<Vec<_>>(),
                "partitions": rows.iter().map(|r| json!({
                    "topic": r.topic,
                    "partition": r.partition,
                    "committed_offset": r.committed,
                    "log_end_offset": r.log_end,
                    "lag": r.lag(),
                    "member_id": r.member.map(|i| desc.members[i].member_id.clone()),
                })).collect::<Vec<_>>(),
                "total_lag": total_lag,
            })),
            Output::Table => {
                text.push_str(&format!(
                    "Group: {}  state: {}  protocol: {}/{}  coordinator: {}  members: {}  total lag: {}\n\n",
                    desc.group_id,
                    desc.state,
                    if desc.protocol_type.is_empty() { "-" } else { &desc.protocol_type },
                    if desc.protocol.is_empty() { "-" } else { &desc.protocol },
                    desc.coordinator,
                    desc.members.len(),
                    total_lag
                ));
                let mut t = Table::new(&[
                    "TOPIC",
                    "PARTITION",
                    "CURRENT-OFFSET",
                    "LOG-END-OFFSET",
                    "LAG",
                    "CONSUMER-ID",
                    "HOST",
                    "CLIENT-ID",
                ]);
                for r in &rows {
                    let m = r.member.map(|i| &desc.members[i]);
                    t.row(vec![
                        r.topic.clone(),
                        r.partition.to_string(),
                        opt(r.committed),
                        opt(r.log_end),
                        opt(r.lag()),
                        m.map_or_else(|| "-".into(), |m| m.member_id.clone()),
                        m.map_or_else(|| "-".into(), |m| m.client_host.clone()),
                        m.map_or_else(|| "-".into(), |m| m.client_id.clone()),
                    ]);
                }
                text.push_str(&t.render());
                if !desc.members.is_empty() {
                    let mut mt = Table::new(&["MEMBER-ID", "CLIENT-ID", "HOST", "ASSIGNMENT"]);
                    for (m, a) in desc.members.iter().zip(&assignments) {
                        mt.row(vec![
                            m.member_id.clone(),
                            m.client_id.clone(),
                            m.client_host.clone(),
                            assignment_text(a),
                        ]);
                    }
                    text.push('\n');
                    text.push_str(&mt.render());
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

async fn delete(client: &Client, groups: &[String], out: Output) -> CliResult {
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for g in groups {
        match client.delete_group(g).await {
            Ok(()) => deleted.push(g.clone()),
            Err(e) => failed.push(CliError::client(format_args!("deleting group {g}"), e)),
        }
    }
    match out {
        Output::Json => print_json(&json!({"deleted": deleted}))?,
        Output::Table => {
            for g in &deleted {
                write_stdout(format_args!("deleted group {g}\n"))?;
            }
        }
    }
    super::failures(failed, groups.len(), "group deletions")
}

/// Where reset-offsets moves each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
    Shift(i64),
}

/// Parses TOPIC or TOPIC:P,P,... into the topic and its partitions (None: all).
fn parse_topic_spec(s: &str) -> CliResult<(String, Option<Vec<i32>>)> {
    let Some((t, ps)) = s.split_once(':') else {
        return Ok((s.to_owned(), None));
    };
    let parts: Result<Vec<i32>, _> = ps.split(',').map(|p| p.trim().parse::<i32>()).collect();
    match parts {
        Ok(p) if !t.is_empty() && !p.is_empty() => Ok((t.to_owned(), Some(p))),
        _ => Err(CliError::new(
            format!("--topic {s:?} is not TOPIC or TOPIC:P,P"),
            "write --topic orders or --topic orders:0,1",
        )),
    }
}

/// The (topic, partition)s the `--topic` specs name, all partitions looked up in Metadata.
async fn resolve_topics(client: &Client, specs: &[String]) -> CliResult<BTreeSet<(String, i32)>> {
    let mut out = BTreeSet::new();
    for s in specs {
        let (t, ps) = parse_topic_spec(s)?;
        let md = client
            .metadata(Some(&[t.as_str()]))
            .await
            .map_err(|e| CliError::client(format_args!("looking up {t}"), e))?;
        let all: Vec<i32> = match md.topics.iter().find(|x| x.name == t) {
            Some(x) if x.error_code == 0 => x.partitions.iter().map(|p| p.partition).collect(),
            _ => {
                return Err(CliError::new(
                    format!("topic {t} does not exist"),
                    "check the name with `osprey topics list`",
                ));
            }
        };
        for p in ps.unwrap_or_else(|| all.clone()) {
            if !all.contains(&p) {
                return Err(CliError::new(
                    format!("topic {t} has no partition {p}"),
                    "pick partitions from `osprey topics describe`",
                ));
            }
            out.insert((t.clone(), p));
        }
    }
    Ok(out)
}

/// What `groups reset-offsets` was asked to do.
struct Reset {
    all_topics: bool,
    target: Target,
    execute: bool,
}

async fn reset_offsets(
    client: &Client,
    group: &str,
    specs: &[String],
    reset: Reset,
    out: Output,
    progress: &mut super::Progress,
) -> CliResult {
    let Reset {
        all_topics,
        target,
        execute,
    } = reset;
    if specs.is_empty() != all_topics {
        return Err(CliError::new(
            "name the topics to reset",
            "give --topic TOPIC[:P,P] (repeatable) or --all-topics, not both",
        ));
    }
    let desc = client
        .describe_group(group)
        .await
        .map_err(|e| CliError::client(format_args!("describing group {group}"), e))?;
    if !matches!(desc.state.as_str(), "Empty" | "Dead") {
        return Err(CliError::new(
            format!(
                "group {group} is {} with {} member(s); offsets can only be reset while it is empty",
                desc.state,
                desc.members.len()
            ),
            "stop the group's consumers (or wait for their session to expire), then retry",
        ));
    }
    let committed = client
        .offset_fetch(group, None)
        .await
        .map_err(|e| CliError::client(format_args!("reading {group}'s committed offsets"), e))?;
    let parts: BTreeSet<(String, i32)> = if all_topics {
        committed
            .iter()
            .map(|c| (c.topic.clone(), c.partition))
            .collect()
    } else {
        resolve_topics(client, specs).await?
    };
    if parts.is_empty() {
        return Err(CliError::new(
            format!("group {group} has no committed offsets"),
            "name the topics with --topic instead of --all-topics",
        ));
    }
    let reading = format!("reading the offsets of {} partition(s)", parts.len());
    let starts = progress
        .during(&reading, log_ends(client, &parts, OffsetSpec::Earliest))
        .await;
    let ends = progress
        .during(&reading, log_ends(client, &parts, OffsetSpec::Latest))
        .await;
    let at_time = match target {
        Target::Timestamp(t) => Some(
            progress
                .during(&reading, log_ends(client, &parts, OffsetSpec::Timestamp(t)))
                .await,
        ),
        _ => None,
    };
    let mut plan = Vec::new();
    for (topic, partition) in &parts {
        let key = (topic.clone(), *partition);
        let current = committed
            .iter()
            .find(|c| &c.topic == topic && c.partition == *partition)
            .and_then(|c| c.offset.clone().ok())
            .filter(|&o| o >= 0);
        let (Some(&start), Some(&end)) = (starts.get(&key), ends.get(&key)) else {
            return Err(CliError::new(
                format!("no offsets for {topic}/{partition}"),
                "the partition may have no leader now: check `osprey topics describe`",
            ));
        };
        let wanted = match target {
            Target::Earliest => start,
            Target::Latest => end,
            Target::Offset(o) => o,
            // A time after the last record answers -1: the end.
            Target::Timestamp(_) => match at_time.as_ref().and_then(|m| m.get(&key)) {
                Some(&o) if o >= 0 => o,
                _ => end,
            },
            Target::Shift(n) => match current {
                Some(c) => c.saturating_add(n),
                None => {
                    return Err(CliError::new(
                        format!("{group} has no committed offset for {topic}/{partition} to shift"),
                        "use --to-earliest/--to-latest/--to-offset for it first",
                    ));
                }
            },
        };
        plan.push((topic.clone(), *partition, current, wanted.clamp(start, end)));
    }
    if execute {
        let offsets: Vec<(String, i32, i64)> = plan
            .iter()
            .map(|(t, p, _, n)| (t.clone(), *p, *n))
            .collect();
        progress
            .during(
                &format!("committing {} offset(s) of {group}", offsets.len()),
                client.offset_commit(group, -1, "", &offsets),
            )
            .await
            .map_err(|e| CliError::client(format_args!("committing {group}'s new offsets"), e))?;
    }
    progress.finish();
    match out {
        Output::Json => print_json(&json!({
            "group": group,
            "executed": execute,
            "partitions": plan.iter().map(|(t, p, c, n)| json!({
                "topic": t, "partition": p, "current_offset": c, "new_offset": n,
            })).collect::<Vec<_>>(),
        }))?,
        Output::Table => {
            let mut t = Table::new(&[
                "GROUP",
                "TOPIC",
                "PARTITION",
                "CURRENT-OFFSET",
                "NEW-OFFSET",
            ]);
            for (topic, p, c, n) in &plan {
                t.row(vec![
                    group.to_owned(),
                    topic.clone(),
                    p.to_string(),
                    opt(*c),
                    n.to_string(),
                ]);
            }
            t.print()?;
        }
    }
    if !execute {
        eprintln!("osprey: dry run, nothing changed; add --execute to apply");
    }
    Ok(())
}

async fn delete_offsets(client: &Client, group: &str, specs: &[String], out: Output) -> CliResult {
    let parts = resolve_topics(client, specs).await?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in &parts {
        by_topic.entry(t).or_default().push(*p);
    }
    let req: Vec<(&str, &[i32])> = by_topic.iter().map(|(t, ps)| (*t, &ps[..])).collect();
    let outcomes = client
        .offset_delete(group, &req)
        .await
        .map_err(|e| CliError::client(format_args!("deleting {group}'s offsets"), e))?;
    match out {
        Output::Json => print_json(&json!({
            "group": group,
            "partitions": outcomes.iter().map(|(t, p, r)| json!({
                "topic": t,
                "partition": p,
                "error": r.as_ref().err().map(|e| e.to_string()),
            })).collect::<Vec<_>>(),
        }))?,
        Output::Table => {
            let mut t = Table::new(&["TOPIC", "PARTITION", "STATUS"]);
            for (topic, p, r) in &outcomes {
                t.row(vec![
                    topic.clone(),
                    p.to_string(),
                    match r {
                        Ok(()) => "deleted".into(),
                        Err(e) => format!("failed: {e}"),
                    },
                ]);
            }
            t.print()?;
        }
    }
    let total = outcomes.len();
    let failed: Vec<CliError> = outcomes
        .into_iter()
        .filter_map(|(t, p, r)| {
            r.err()
                .map(|e| CliError::client(format_args!("deleting {group}'s offset of {t}/{p}"), e))
        })
        .collect();
    super::failures(failed, total, "offset deletions")
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM] (UTC without a zone) to ms since the
/// epoch, as kafka-consumer-groups.sh --to-datetime takes it.
fn parse_datetime(s: &str) -> CliResult<i64> {
    let bad = || {
        CliError::new(
            format!("--to-datetime {s:?} is not YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM]"),
            "write e.g. 2024-05-01T12:00:00.000 or 2024-05-01T12:00:00+02:00",
        )
    };
    let num = |t: &str| -> CliResult<i64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        t.parse::<i64>().map_err(|_| bad())
    };
    let (date, rest) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, day] = d[..] else {
        return Err(bad());
    };
    let (y, mo, day) = (num(y)?, num(mo)?, num(day)?);
    // The zone: Z, or a +/- offset after the time.
    let (time, offset_ms) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (t, z) = rest.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let (zh, zm) = z[1..].split_once(':').unwrap_or((&z[1..], "0"));
        (t, sign * (num(zh)? * 3_600_000 + num(zm)? * 60_000))
    } else {
        (rest, 0)
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<&str> = hms.split(':').collect();
    let (h, mi, sec) = match t[..] {
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        [h, m] => (num(h)?, num(m)?, 0),
        _ => return Err(bad()),
    };
    let ms = if frac.is_empty() {
        0
    } else {
        let f: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&f)?
    };
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, day);
    Ok(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms - offset_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves --to-datetime parses Kafka's format with and without a zone to the right epoch
    // milliseconds, and refuses what is not a date.
    #[test]
    fn datetime_parses() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").unwrap(), 0);
        assert_eq!(
            parse_datetime("2024-01-01T00:00:00.000Z").unwrap(),
            1_704_067_200_000
        );
        assert_eq!(
            parse_datetime("2024-01-01T02:00:00.5+02:00").unwrap(),
            1_704_067_200_500
        );
        assert_eq!(
            parse_datetime("2000-02-29T12:34:56").unwrap(),
            951_827_696_000
        );
        assert!(parse_datetime("2024-13-01T00:00:00").is_err());
        assert!(parse_datetime("yesterday").is_err());
    }

    // Proves topic specs take every partition or a list, and refuse malformed lists.
    #[test]
    fn topic_specs() {
        assert_eq!(parse_topic_spec("t").unwrap(), ("t".into(), None));
        assert_eq!(
            parse_topic_spec("t:0,2").unwrap(),
            ("t".into(), Some(vec![0, 2]))
        );
        assert!(parse_topic_spec("t:x").is_err());
    }
}
