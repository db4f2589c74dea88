//! The ACL authorizer (Kafka's StandardAuthorizer semantics), on when the broker runs with
//! `--authorizer acl`: ACLs in the cluster metadata, super users, and
//! allow.everyone.if.no.acl.found.
//!
//! Runs on: any shard, from that shard's own copy of the metadata (no cross-core lock);
//! pure. A DENY that matches wins over any ALLOW; ALLOW of READ, WRITE, DELETE or ALTER
//! implies DESCRIBE, and ALTER_CONFIGS implies DESCRIBE_CONFIGS, as in Kafka.

use std::net::IpAddr;

use crate::metadata::{AclBinding, ClusterMeta};
use crate::protocol::acl::op;

/// Kafka's ResourceType codes.
pub mod resource {
    pub const ANY: i8 = 1;
    pub const TOPIC: i8 = 2;
    pub const GROUP: i8 = 3;
    pub const CLUSTER: i8 = 4;
    pub const TRANSACTIONAL_ID: i8 = 5;
}

/// Kafka's PatternType codes.
pub mod pattern {
    pub const ANY: i8 = 1;
    pub const MATCH: i8 = 2;
    pub const LITERAL: i8 = 3;
    pub const PREFIXED: i8 = 4;
}

/// Kafka's AclPermissionType codes.
pub mod permission {
    pub const ANY: i8 = 1;
    pub const DENY: i8 = 2;
    pub const ALLOW: i8 = 3;
}

/// Kafka's AclOperation ANY (filters only) and ALL.
pub const OP_ANY: i8 = 1;
pub const OP_ALL: i8 = 2;
/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// Kafka's wildcards for resource names and principals.
pub const WILDCARD: &str = "*";
pub const WILDCARD_PRINCIPAL: &str = "User:*";

/// The authorizer's settings (`--authorizer acl`, `--super-users`,
/// `--allow-everyone-if-no-acl-found`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AuthorizerConfig {
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
}

fn resource_matches(a: &AclBinding, resource_type: i8, name: &str) -> bool {
    a.resource_type == resource_type
        && match a.pattern_type {
            pattern::LITERAL => a.resource_name == name || a.resource_name == WILDCARD,
            pattern::PREFIXED => name.starts_with(a.resource_name.as_str()),
            _ => false,
        }
}

fn op_matches(acl_op: i8, wanted: u8, permission_type: i8) -> bool {
    let wanted = wanted as i8;
    if acl_op == OP_ALL || acl_op == wanted {
        return true;
    }
    // Implied operations apply to ALLOW only (Kafka's StandardAuthorizer).
    permission_type == permission::ALLOW
        && match wanted as u8 {
            op::DESCRIBE => [op::READ, op::WRITE, op::DELETE, op::ALTER]
                .iter()
                .any(|o| *o as i8 == acl_op),
            op::DESCRIBE_CONFIGS => acl_op == op::ALTER_CONFIGS as i8,
            _ => false,
        }
}

/// Whether `principal` from `host` may do `operation` on the resource.
pub fn authorize(
    config: &AuthorizerConfig,
    meta: &ClusterMeta,
    principal: &str,
    host: IpAddr,
    operation: u8,
    resource_type: i8,
    name: &str,
) -> bool {
    if config.super_users.iter().any(|s| s == principal) {
        return true;
    }
    let host = host.to_string();
    let mut any_for_resource = false;
    let mut allowed = false;
    for a in meta
        .acls
        .iter()
        .filter(|a| resource_matches(a, resource_type, name))
    {
        any_for_resource = true;
        let who = a.principal == principal || a.principal == WILDCARD_PRINCIPAL;
        let from = a.host == WILDCARD || a.host == host;
        if !(who && from && op_matches(a.operation, operation, a.permission_type)) {
            continue;
        }
        match a.permission_type {
            permission::DENY => return false,
            permission::ALLOW => allowed = true,
            _ => {}
        }
    }
    allowed || (!any_for_resource && config.allow_everyone_if_no_acl_found)
}

/// A DescribeAcls / DeleteAcls filter (Kafka's AclBindingFilter).
#[derive(Clone, Debug)]
pub struct AclFilter {
    pub resource_type: i8,
    pub resource_name: Option<String>,
    pub pattern_type: i8,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: i8,
    pub permission_type: i8,
}

impl AclFilter {
    pub fn matches(&self, a: &AclBinding) -> bool {
        let name_ok = match (&self.resource_name, self.pattern_type) {
            (None, _) => {
                self.pattern_type == pattern::ANY
                    || self.pattern_type == pattern::MATCH
                    || self.pattern_type == a.pattern_type
            }
            (Some(n), pattern::ANY) => &a.resource_name == n,
            // MATCH: the bindings that would apply to a resource of this name.
            (Some(n), pattern::MATCH) => match a.pattern_type {
                pattern::LITERAL => &a.resource_name == n || a.resource_name == WILDCARD,
                pattern::PREFIXED => n.starts_with(a.resource_name.as_str()),
                _ => false,
            },
            (Some(n), p) => p == a.pattern_type && &a.resource_name == n,
        };
        (self.resource_type == resource::ANY || self.resource_type == a.resource_type)
            && name_ok
            && self.principal.as_ref().is_none_or(|p| p == &a.principal)
            && self.host.as_ref().is_none_or(|h| h == &a.host)
            && (self.operation == OP_ANY || self.operation == a.operation)
            && (self.permission_type == permission::ANY
                || self.permission_type == a.permission_type)
    }
}

/// Why a binding cannot be created (Kafka's checks), or `None` when it can.
pub fn invalid_binding(a: &AclBinding) -> Option<&'static str> {
    if !matches!(
        a.resource_type,
        resource::TOPIC | resource::GROUP | resource::CLUSTER | resource::TRANSACTIONAL_ID
    ) {
        return Some("Invalid resource type");
    }
    if !matches!(a.pattern_type, pattern::LITERAL | pattern::PREFIXED) {
        return Some("Invalid pattern type");
    }
    if a.resource_name.is_empty() {
        return Some("Resource name must not be empty");
    }
    if a.resource_type == resource::CLUSTER && a.resource_name != CLUSTER_NAME {
        return Some("The only valid name for the CLUSTER resource is kafka-cluster");
    }
    if !(OP_ALL..=op::IDEMPOTENT_WRITE as i8).contains(&a.operation) {
        return Some("Invalid operation");
    }
    if !matches!(a.permission_type, permission::ALLOW | permission::DENY) {
        return Some("Invalid permission type");
    }
    if !a.principal.contains(':') {
        return Some("Principal must be TYPE:NAME, e.g. User:alice");
    }
    if a.host != WILDCARD && a.host.parse::<IpAddr>().is_err() {
        return Some("Host must be * or an IP address");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(rt: i8, name: &str, pt: i8, who: &str, o: u8, perm: i8) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation: o as i8,
            permission_type: perm,
        }
    }

    // Literal and prefixed patterns, deny beating allow, implied DESCRIBE, super users,
    // wildcards, and allow.everyone.if.no.acl.found only where no ACL names the resource.
    #[test]
    fn kafka_semantics() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let meta = ClusterMeta {
            acls: vec![
                acl(
                    resource::TOPIC,
                    "a",
                    pattern::LITERAL,
                    "User:alice",
                    op::WRITE,
                    permission::ALLOW,
                ),
                acl(
                    resource::TOPIC,
                    "logs-",
                    pattern::PREFIXED,
                    "User:alice",
                    op::READ,
                    permission::ALLOW,
                ),
                acl(
                    resource::TOPIC,
                    "logs-secret",
                    pattern::LITERAL,
                    "User:alice",
                    op::READ,
                    permission::DENY,
                ),
                acl(
                    resource::GROUP,
                    "*",
                    pattern::LITERAL,
                    "User:*",
                    op::READ,
                    permission::ALLOW,
                ),
            ],
            ..Default::default()
        };
        let cfg = AuthorizerConfig {
            super_users: vec!["User:admin".into()],
            allow_everyone_if_no_acl_found: false,
        };
        let can = |who: &str, o: u8, rt: i8, n: &str| authorize(&cfg, &meta, who, ip, o, rt, n);
        assert!(can("User:alice", op::WRITE, resource::TOPIC, "a"));
        assert!(can("User:alice", op::DESCRIBE, resource::TOPIC, "a"));
        assert!(!can("User:alice", op::READ, resource::TOPIC, "a"));
        assert!(!can("User:alice", op::WRITE, resource::TOPIC, "b"));
        assert!(can("User:alice", op::READ, resource::TOPIC, "logs-app"));
        assert!(!can("User:alice", op::READ, resource::TOPIC, "logs-secret"));
        assert!(!can("User:bob", op::WRITE, resource::TOPIC, "a"));
        assert!(can("User:bob", op::READ, resource::GROUP, "g"));
        assert!(can("User:admin", op::DELETE, resource::TOPIC, "anything"));
        assert!(!can("User:bob", op::READ, resource::TOPIC, "unnamed"));
        let open = AuthorizerConfig {
            allow_everyone_if_no_acl_found: true,
            ..cfg.clone()
        };
        assert!(authorize(
            &open,
            &meta,
            "User:bob",
            ip,
            op::READ,
            resource::TOPIC,
            "unnamed"
        ));
        assert!(!authorize(
            &open,
            &meta,
            "User:bob",
            ip,
            op::READ,
            resource::TOPIC,
            "a"
        ));
    }

    // Filters: ANY and MATCH patterns, and exact fields.
    #[test]
    fn filters() {
        let b = acl(
            resource::TOPIC,
            "logs-",
            pattern::PREFIXED,
            "User:alice",
            op::READ,
            permission::ALLOW,
        );
        let f = |name: Option<&str>, pt: i8| AclFilter {
            resource_type: resource::ANY,
            resource_name: name.map(str::to_string),
            pattern_type: pt,
            principal: None,
            host: None,
            operation: OP_ANY,
            permission_type: permission::ANY,
        };
        assert!(f(None, pattern::ANY).matches(&b));
        assert!(f(Some("logs-"), pattern::PREFIXED).matches(&b));
        assert!(!f(Some("logs-"), pattern::LITERAL).matches(&b));
        assert!(f(Some("logs-x"), pattern::MATCH).matches(&b));
        assert!(!f(Some("other"), pattern::MATCH).matches(&b));
        assert!(invalid_binding(&b).is_none());
        let mut bad = b.clone();
        bad.host = "somewhere".into();
        assert!(invalid_binding(&bad).is_some());
    }
}
