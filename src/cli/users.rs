//! `osprey users create|list|delete`: SCRAM credentials, on a running broker
//! (AlterUserScramCredentials / DescribeUserScramCredentials) or, with `--data-dir`, written
//! into a stopped broker's data directory before its first start.

use std::path::PathBuf;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum UsersAction {
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
        /// A running broker's listener.
        #[arg(long)]
        bootstrap: Option<String>,
        /// Kafka client properties file for that listener's security (TLS, SASL).
        #[arg(long, value_name = "FILE", conflicts_with = "data_dir")]
        command_config: Option<PathBuf>,
    },
    /// Users with SCRAM credentials and their mechanisms.
    List {
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Kafka client properties file (TLS, SASL).
        #[arg(long, value_name = "FILE")]
        command_config: Option<PathBuf>,
    },
    /// Delete a user's credential of one mechanism (both when none is named).
    Delete {
        name: String,
        #[arg(long)]
        mechanism: Option<String>,
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Kafka client properties file (TLS, SASL).
        #[arg(long, value_name = "FILE")]
        command_config: Option<PathBuf>,
    },
}

pub fn main(action: UsersAction) -> Result<(), String> {
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
    let (bootstrap, command_config) = match &action {
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
        UsersAction::Create {
            bootstrap,
            command_config,
            ..
        } => (
            bootstrap
                .clone()
                .ok_or("give --data-dir (broker stopped) or --bootstrap (broker running)")?,
            command_config.clone(),
        ),
        UsersAction::List {
            bootstrap,
            command_config,
        }
        | UsersAction::Delete {
            bootstrap,
            command_config,
            ..
        } => (bootstrap.clone(), command_config.clone()),
    };
    let config = super::client_config(command_config.as_deref()).map_err(|e| e.to_string())?;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .map_err(|e| format!("cannot start the client runtime: {e}"))?;
    ex.run(async move {
        use osprey_client::Client;
        let client = Client::connect(&bootstrap, config)
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
