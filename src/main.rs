//! The `osprey` binary: `osprey serve` runs the broker (the default when no subcommand is
//! given); `osprey topics ...`, `osprey users ...` (SCRAM credentials) and `osprey acls ...`
//! administer a running broker through the project's Kafka client (the same one loadgen
//! uses; PLAINTEXT listeners only); `osprey users create --data-dir` writes the first SCRAM
//! user into a stopped broker's data directory; `osprey probe` measures this host's limits.

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
    /// SCRAM users: create one in a data directory before the broker's first start
    /// (`--data-dir`), or create, list and delete them on a running broker.
    Users {
        #[command(subcommand)]
        action: UsersAction,
    },
    /// ACLs of the authorizer (`serve --authorizer acl`) on a running broker.
    Acls {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        #[command(subcommand)]
        action: AclsAction,
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

/// One ACL binding (create, delete) on the command line, in Kafka's kafka-acls.sh terms.
#[derive(clap::Args)]
struct AclArgs {
    /// `User:NAME` (or `User:*`).
    #[arg(long)]
    principal: String,
    /// READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS,
    /// ALTER_CONFIGS, IDEMPOTENT_WRITE or ALL.
    #[arg(long)]
    operation: String,
    #[arg(long, group = "resource")]
    topic: Option<String>,
    #[arg(long, group = "resource")]
    group: Option<String>,
    #[arg(long, group = "resource")]
    transactional_id: Option<String>,
    #[arg(long, group = "resource")]
    cluster: bool,
    /// literal (default) or prefixed.
    #[arg(long, default_value = "literal")]
    pattern: String,
    /// Deny instead of allow.
    #[arg(long)]
    deny: bool,
    #[arg(long, default_value = "*")]
    host: String,
}

#[derive(Subcommand)]
enum AclsAction {
    /// Add an ACL: `osprey acls create --principal User:alice --operation READ --topic t`.
    Create(AclArgs),
    /// Every ACL (or those of one principal).
    List {
        #[arg(long)]
        principal: Option<String>,
    },
    /// Remove exactly this ACL.
    Delete(AclArgs),
}

fn acl_binding(a: &AclArgs) -> Result<osprey::metadata::AclBinding, String> {
    use osprey::acl::{CLUSTER_NAME, pattern, permission, resource};
    let ops = [
        "ALL",
        "READ",
        "WRITE",
        "CREATE",
        "DELETE",
        "ALTER",
        "DESCRIBE",
        "CLUSTER_ACTION",
        "DESCRIBE_CONFIGS",
        "ALTER_CONFIGS",
        "IDEMPOTENT_WRITE",
    ];
    let operation = ops
        .iter()
        .position(|o| o.eq_ignore_ascii_case(&a.operation))
        .map(|i| i as i8 + 2)
        .ok_or_else(|| format!("unknown operation {} ({})", a.operation, ops.join(", ")))?;
    let (resource_type, resource_name) = match (&a.topic, &a.group, &a.transactional_id) {
        (Some(t), _, _) => (resource::TOPIC, t.clone()),
        (_, Some(g), _) => (resource::GROUP, g.clone()),
        (_, _, Some(t)) => (resource::TRANSACTIONAL_ID, t.clone()),
        _ if a.cluster => (resource::CLUSTER, CLUSTER_NAME.to_string()),
        _ => {
            return Err(
                "name a resource: --topic, --group, --transactional-id or --cluster".into(),
            );
        }
    };
    let pattern_type = match a.pattern.to_ascii_lowercase().as_str() {
        "literal" => pattern::LITERAL,
        "prefixed" => pattern::PREFIXED,
        p => return Err(format!("unknown pattern {p} (literal, prefixed)")),
    };
    Ok(osprey::metadata::AclBinding {
        resource_type,
        resource_name,
        pattern_type,
        principal: a.principal.clone(),
        host: a.host.clone(),
        operation,
        permission_type: if a.deny {
            permission::DENY
        } else {
            permission::ALLOW
        },
    })
}

fn acls(bootstrap: String, action: AclsAction) -> Result<(), String> {
    use kafka_protocol::messages::create_acls_request::AclCreation;
    use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
    use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
    use kafka_protocol::protocol::StrBytes;
    let s = |v: &str| StrBytes::from_string(v.to_string());
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    ex.run(async move {
        use osprey::client::{Client, ClientConfig};
        let client = Client::connect(&bootstrap, ClientConfig::default())
            .await
            .map_err(|e| format!("cannot reach {bootstrap}: {e}"))?;
        let conn = client.any_connection().await.map_err(|e| e.to_string())?;
        let err = |code: i16, m: Option<&StrBytes>| {
            format!("error {code}: {}", m.map(|m| m.as_str()).unwrap_or(""))
        };
        match action {
            AclsAction::Create(a) => {
                let b = acl_binding(&a)?;
                let req = CreateAclsRequest::default().with_creations(vec![
                    AclCreation::default()
                        .with_resource_type(b.resource_type)
                        .with_resource_name(s(&b.resource_name))
                        .with_resource_pattern_type(b.pattern_type)
                        .with_principal(s(&b.principal))
                        .with_host(s(&b.host))
                        .with_operation(b.operation)
                        .with_permission_type(b.permission_type),
                ]);
                let resp = conn.request(&req, 2).await.map_err(|e| e.to_string())?;
                for r in resp.results {
                    if r.error_code != 0 {
                        return Err(err(r.error_code, r.error_message.as_ref()));
                    }
                }
                println!("created");
                Ok(())
            }
            AclsAction::List { principal } => {
                let req = DescribeAclsRequest::default()
                    .with_resource_type_filter(osprey::acl::resource::ANY)
                    .with_resource_name_filter(None)
                    .with_host_filter(None)
                    .with_pattern_type_filter(osprey::acl::pattern::ANY)
                    .with_principal_filter(principal.map(|p| s(&p)))
                    .with_operation(osprey::acl::OP_ANY)
                    .with_permission_type(osprey::acl::permission::ANY);
                let resp = conn.request(&req, 2).await.map_err(|e| e.to_string())?;
                if resp.error_code != 0 {
                    return Err(err(resp.error_code, resp.error_message.as_ref()));
                }
                for r in resp.resources {
                    for a in r.acls {
                        println!(
                            "resource_type={} name={} pattern={} principal={} host={} operation={} permission={}",
                            r.resource_type,
                            r.resource_name.as_str(),
                            r.pattern_type,
                            a.principal.as_str(),
                            a.host.as_str(),
                            a.operation,
                            a.permission_type
                        );
                    }
                }
                Ok(())
            }
            AclsAction::Delete(a) => {
                let b = acl_binding(&a)?;
                let req = DeleteAclsRequest::default().with_filters(vec![
                    DeleteAclsFilter::default()
                        .with_resource_type_filter(b.resource_type)
                        .with_resource_name_filter(Some(s(&b.resource_name)))
                        .with_pattern_type_filter(b.pattern_type)
                        .with_principal_filter(Some(s(&b.principal)))
                        .with_host_filter(Some(s(&b.host)))
                        .with_operation(b.operation)
                        .with_permission_type(b.permission_type),
                ]);
                let resp = conn.request(&req, 2).await.map_err(|e| e.to_string())?;
                let mut n = 0;
                for r in resp.filter_results {
                    if r.error_code != 0 {
                        return Err(err(r.error_code, r.error_message.as_ref()));
                    }
                    n += r.matching_acls.len();
                }
                println!("deleted {n}");
                Ok(())
            }
        }
    })
}

#[derive(Subcommand)]
enum UsersAction {
    /// `osprey users create NAME --mechanism SCRAM-SHA-256 --password P (--data-dir DIR |
    /// --bootstrap HOST:PORT)`.
    Create {
        name: String,
        #[arg(long, default_value = "SCRAM-SHA-256")]
        mechanism: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value_t = osprey::sasl::scram::ITERATIONS_MIN)]
        iterations: i32,
        /// Write the credential into this (stopped) broker's data directory; it is
        /// created in the cluster metadata when the broker starts.
        #[arg(long, conflicts_with = "bootstrap")]
        data_dir: Option<PathBuf>,
        /// A running broker's PLAINTEXT listener.
        #[arg(long)]
        bootstrap: Option<String>,
    },
    /// Users with SCRAM credentials and their mechanisms.
    List {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
    /// Delete a user's credential of one mechanism (both when none is named).
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
    },
}

fn users(action: UsersAction) -> Result<(), String> {
    use kafka_protocol::messages::alter_user_scram_credentials_request::{
        ScramCredentialDeletion, ScramCredentialUpsertion,
    };
    use kafka_protocol::messages::describe_user_scram_credentials_request::UserName;
    use kafka_protocol::messages::{
        AlterUserScramCredentialsRequest, DescribeUserScramCredentialsRequest,
    };
    use kafka_protocol::protocol::StrBytes;
    use osprey::sasl::scram::Mechanism;
    let mech = |m: &str| {
        Mechanism::from_name(&m.to_ascii_uppercase())
            .ok_or_else(|| format!("unknown mechanism {m} (SCRAM-SHA-256, SCRAM-SHA-512)"))
    };
    let bootstrap = match &action {
        UsersAction::Create {
            name,
            mechanism,
            password,
            iterations,
            data_dir: Some(dir),
            ..
        } => {
            osprey::sasl::add_bootstrap_user(dir, name, mech(mechanism)?, password, *iterations)?;
            println!(
                "{name}: {mechanism} credential stored in {}; created when the broker starts",
                dir.display()
            );
            return Ok(());
        }
        UsersAction::Create { bootstrap, .. } => bootstrap
            .clone()
            .ok_or("give --data-dir (broker stopped) or --bootstrap (broker running)")?,
        UsersAction::List { bootstrap } | UsersAction::Delete { bootstrap, .. } => {
            bootstrap.clone()
        }
    };
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    ex.run(async move {
        use osprey::client::{Client, ClientConfig};
        let client = Client::connect(&bootstrap, ClientConfig::default())
            .await
            .map_err(|e| format!("cannot reach {bootstrap}: {e}"))?;
        let conn = client.any_connection().await.map_err(|e| e.to_string())?;
        let alter = |req: AlterUserScramCredentialsRequest| {
            let conn = conn.clone();
            async move {
                let resp = conn.request(&req, 0).await.map_err(|e| e.to_string())?;
                for r in resp.results {
                    if r.error_code != 0 {
                        return Err(format!(
                            "{}: error {} {}",
                            r.user.as_str(),
                            r.error_code,
                            r.error_message.as_deref().unwrap_or("")
                        ));
                    }
                }
                Ok(())
            }
        };
        match action {
            UsersAction::Create {
                name,
                mechanism,
                password,
                iterations,
                ..
            } => {
                let m = mech(&mechanism)?;
                let mut salt = [0u8; 16];
                getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
                let salted =
                    m.salted_password(password.as_bytes(), &salt, iterations.max(1) as u32);
                let req = AlterUserScramCredentialsRequest::default().with_upsertions(vec![
                    ScramCredentialUpsertion::default()
                        .with_name(StrBytes::from_string(name.clone()))
                        .with_mechanism(m.kafka_type())
                        .with_iterations(iterations)
                        .with_salt(salt.to_vec().into())
                        .with_salted_password(salted.into()),
                ]);
                alter(req).await?;
                println!("created {name} ({})", m.name());
                Ok(())
            }
            UsersAction::List { .. } => {
                let resp = conn
                    .request(
                        &DescribeUserScramCredentialsRequest::default().with_users(None),
                        0,
                    )
                    .await
                    .map_err(|e| e.to_string())?;
                for r in resp.results {
                    let mechs: Vec<String> = r
                        .credential_infos
                        .iter()
                        .map(|c| {
                            let name = Mechanism::from_kafka_type(c.mechanism)
                                .map(|m| m.name().to_string())
                                .unwrap_or_else(|| format!("mechanism-{}", c.mechanism));
                            format!("{name}(iterations={})", c.iterations)
                        })
                        .collect();
                    println!("{}\t{}", r.user.as_str(), mechs.join(","));
                }
                Ok(())
            }
            UsersAction::Delete {
                name, mechanism, ..
            } => {
                let mechs: Vec<Mechanism> = match mechanism {
                    Some(m) => vec![mech(&m)?],
                    None => {
                        let resp = conn
                            .request(
                                &DescribeUserScramCredentialsRequest::default().with_users(Some(
                                    vec![
                                        UserName::default()
                                            .with_name(StrBytes::from_string(name.clone())),
                                    ],
                                )),
                                0,
                            )
                            .await
                            .map_err(|e| e.to_string())?;
                        resp.results
                            .iter()
                            .flat_map(|r| r.credential_infos.iter())
                            .filter_map(|c| Mechanism::from_kafka_type(c.mechanism))
                            .collect()
                    }
                };
                if mechs.is_empty() {
                    return Err(format!("{name} has no SCRAM credentials"));
                }
                let req = AlterUserScramCredentialsRequest::default().with_deletions(
                    mechs
                        .iter()
                        .map(|m| {
                            ScramCredentialDeletion::default()
                                .with_name(StrBytes::from_string(name.clone()))
                                .with_mechanism(m.kafka_type())
                        })
                        .collect(),
                );
                alter(req).await?;
                println!("deleted {name}");
                Ok(())
            }
        }
    })
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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Topics { bootstrap, action }) => topics(bootstrap, action),
        Some(Command::Probe { dir, bytes }) => probe(dir, bytes),
        Some(Command::Users { action }) => users(action),
        Some(Command::Acls { bootstrap, action }) => acls(bootstrap, action),
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
