//! osprey: a Kafka-compatible, thread-per-core message broker on io_uring.
//!
//! The library behind the `osprey` binary: server start-up, the per-shard state, the
//! router between shards, the controller, the Kafka protocol codec and handlers, consumer
//! groups, and the client shared with `loadgen`. ARCHITECTURE.md has the map.

pub mod acl;
pub mod admin;
pub mod alloc;
/// The project's Kafka client is its own crate (`client/`); `crate::client` stays its path here.
pub use osprey_client as client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod connection;
pub mod controller;
pub mod durable;
pub mod fetch_session;
pub mod groups;
pub mod handlers;
pub mod internal_topic;
pub mod memory;
pub mod metadata;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod replication;
pub mod router;
pub mod runtime;
pub mod sasl;
pub mod server;
pub mod session;
pub mod shard;
pub mod sync;
pub mod tls;
pub mod topic_config;
pub mod txn;

/// Installed by the library so every binary and test that links osprey (the broker,
/// loadgen, the test suites) survives kafka-protocol's untrusted pre-allocation; see `alloc`.
#[global_allocator]
static ALLOCATOR: alloc::OspreyAllocator = alloc::OspreyAllocator;
