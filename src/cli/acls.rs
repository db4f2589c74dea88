//! `osprey acls create|list|delete`: the authorizer's ACLs (`serve --authorizer acl`) on a
//! running broker, through CreateAcls / DescribeAcls / DeleteAcls.

use clap::Subcommand;

#[derive(clap::Args)]
pub struct AclArgs {
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
pub enum AclsAction {
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

pub fn main(
    bootstrap: String,
    command_config: Option<std::path::PathBuf>,
    action: AclsAction,
) -> Result<(), String> {
    let config = super::client_config(command_config.as_deref()).map_err(|e| e.to_string())?;
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
        use osprey_client::Client;
        let client = Client::connect(&bootstrap, config)
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
