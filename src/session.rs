//! One client connection's identity: the listener it came through (its name and security
//! protocol), the client address, and the principal once authenticated.
//!
//! Runs on: the shard that accepted the connection; handed by `Rc` to every request task
//! of the connection. The principal is a `RefCell` written only by the connection's read
//! loop (SASL), never borrowed across an `.await`.

use std::cell::RefCell;
use std::net::SocketAddr;

use crate::config::{Listener, SecurityProtocol};
use crate::shard::Shard;

/// Kafka's principal of an unauthenticated connection (PLAINTEXT listeners).
pub const ANONYMOUS: &str = "User:ANONYMOUS";

pub struct Session {
    pub peer: SocketAddr,
    /// Index into `BrokerConfig::listeners` (and `Shard::nodes`).
    pub listener: usize,
    pub listener_name: String,
    pub protocol: SecurityProtocol,
    /// Kafka's principal string, `User:NAME`.
    principal: RefCell<String>,
    /// Held by a transactional Produce while it verifies its partitions with the
    /// coordinator (KIP-890) and starts its appends, so pipelined Produce requests of this
    /// connection still start their appends in request order.
    pub txn_produce_order: glommio::sync::Semaphore,
}

impl Session {
    pub fn new(peer: SocketAddr, listener: usize, l: &Listener) -> Session {
        Session {
            peer,
            listener,
            listener_name: l.name.clone(),
            protocol: l.protocol,
            principal: RefCell::new(ANONYMOUS.to_string()),
            txn_produce_order: glommio::sync::Semaphore::new(1),
        }
    }

    pub fn principal(&self) -> String {
        self.principal.borrow().clone()
    }

    pub fn set_principal(&self, p: String) {
        *self.principal.borrow_mut() = p;
    }

    /// Whether this connection's principal may do `operation` on the resource: always
    /// without `--authorizer`; else the shard's own copy of the ACLs decides.
    pub fn may(&self, shard: &Shard, operation: u8, resource_type: i8, name: &str) -> bool {
        match &shard.config.authorizer {
            None => true,
            Some(cfg) => crate::acl::authorize(
                cfg,
                &shard.meta(),
                &self.principal.borrow(),
                self.peer.ip(),
                operation,
                resource_type,
                name,
            ),
        }
    }

    /// Kafka's authorized-operations bit field (KIP-430) of one resource for this
    /// principal: the operations of `supported` (a `protocol::acl` set) it may do, each
    /// asked of the authorizer as Kafka's `AuthHelper.authorizedOperations` does; every
    /// supported one without `--authorizer`.
    pub fn authorized_ops(
        &self,
        shard: &Shard,
        resource_type: i8,
        name: &str,
        supported: i32,
    ) -> i32 {
        if shard.config.authorizer.is_none() {
            return supported;
        }
        (0..i32::BITS as u8)
            .filter(|o| supported & (1 << o) != 0)
            .filter(|o| self.may(shard, *o, resource_type, name))
            .fold(0, |bits, o| bits | (1 << o))
    }

    /// `may` on the cluster resource.
    pub fn may_cluster(&self, shard: &Shard, operation: u8) -> bool {
        self.may(
            shard,
            operation,
            crate::acl::resource::CLUSTER,
            crate::acl::CLUSTER_NAME,
        )
    }
}
