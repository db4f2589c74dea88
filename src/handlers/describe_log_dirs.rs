//! DescribeLogDirs (key 35): the one log dir of this node (the data directory) with every
//! partition replica the node holds and its size on disk (all segment files), plus the
//! volume's total and usable bytes (v4).
//!
//! Runs on: the shard the request arrived on. Each shard is its own Kafka node, and a
//! client asks each node about its own replicas, so the answer lists this shard's
//! replicas only (the other shards of the host answer for theirs).
//! Authorization (Kafka's): DESCRIBE on the cluster; without it the answer lists no log
//! dir, with CLUSTER_AUTHORIZATION_FAILED in the top-level error code (v3+; v1-2 have no
//! such field, so an empty list is all they see).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{
    ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName,
};

use super::{ApiSpec, Reply, respond, str_bytes};
use crate::protocol::acl::op;
use crate::protocol::{ProtocolError, RequestFrame, error};
use crate::session::Session;
use crate::shard::Shard;

pub const API: ApiSpec = ApiSpec {
    key: ApiKey::DescribeLogDirs,
    min_version: 1,
    max_version: 4,
};

/// (total bytes, usable bytes) of the volume holding `dir`; -1 each when unknown, as Kafka.
fn volume_bytes(dir: &Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return (-1, -1);
    }
    let block = st.f_frsize as i64;
    (
        (st.f_blocks as i64).saturating_mul(block),
        (st.f_bavail as i64).saturating_mul(block),
    )
}

pub async fn handle(
    shard: &Rc<Shard>,
    session: &Session,
    req: RequestFrame,
) -> Result<Reply, ProtocolError> {
    let body: DescribeLogDirsRequest = req.decode()?;
    if !session.may_cluster(shard, op::DESCRIBE) {
        let resp =
            DescribeLogDirsResponse::default().with_error_code(error::CLUSTER_AUTHORIZATION_FAILED);
        return Ok(Reply::Frame(respond(shard, &req, &resp)?));
    }
    // topic -> (partition -> size); `None` in the request means every partition.
    let wanted = |topic: &str, p: i32| match &body.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| t.topic.0.as_str() == topic && t.partitions.contains(&p)),
    };
    let mut topics: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
    for (name, p, r) in shard.local_partitions() {
        if wanted(&name, p) {
            let size = i64::try_from(r.log.stats().size_bytes).unwrap_or(i64::MAX);
            topics.entry(name).or_default().push((p, size));
        }
    }
    let dir = std::path::absolute(&shard.config.data_dir)
        .unwrap_or_else(|_| shard.config.data_dir.clone());
    let (total, usable) = volume_bytes(&dir);
    let result = DescribeLogDirsResult::default()
        .with_error_code(error::NONE)
        .with_log_dir(str_bytes(dir.display().to_string()))
        .with_total_bytes(total)
        .with_usable_bytes(usable)
        .with_topics(
            topics
                .into_iter()
                .map(|(name, mut parts)| {
                    parts.sort_unstable();
                    DescribeLogDirsTopic::default()
                        .with_name(TopicName(str_bytes(name)))
                        .with_partitions(
                            parts
                                .into_iter()
                                .map(|(p, size)| {
                                    DescribeLogDirsPartition::default()
                                        .with_partition_index(p)
                                        .with_partition_size(size)
                                        .with_offset_lag(0)
                                        .with_is_future_key(false)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let resp = DescribeLogDirsResponse::default()
        .with_error_code(error::NONE)
        .with_results(vec![result]);
    Ok(Reply::Frame(respond(shard, &req, &resp)?))
}
