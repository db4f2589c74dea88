//! Consumer groups: the coordinator for the groups that hash to this shard.
//!
//! Runs on: every shard, for the groups it coordinates (shard = hash(group id) % shards).
//! The group protocol arrives with the consumer-groups work; until then the broker does not
//! advertise the group APIs, so clients never reach this module.

use crate::config::BrokerConfig;

pub struct Coordinator {
    pub shard: usize,
}

impl Coordinator {
    pub fn new(shard: usize, _config: &BrokerConfig) -> Self {
        Coordinator { shard }
    }
}

impl Coordinator {
    /// Loads this shard's committed offsets (start-up).
    pub async fn start(&self, _shard: &std::rc::Rc<crate::shard::Shard>) {}
    /// Persists what must survive (shutdown).
    pub async fn stop(&self, _shard: &std::rc::Rc<crate::shard::Shard>) {}
}

/// The group APIs' handlers and their registry entries.
pub mod handlers {
    use std::rc::Rc;

    use crate::handlers::{ApiSpec, Reply};
    use crate::protocol::{ProtocolError, RequestFrame};
    use crate::shard::Shard;

    pub const REGISTRY: &[ApiSpec] = &[];

    pub async fn dispatch(_shard: &Rc<Shard>, req: RequestFrame) -> Result<Reply, ProtocolError> {
        Err(ProtocolError::UnsupportedVersion {
            key: req.api_key,
            version: req.version,
        })
    }
}
