//! Authorized-operations bit fields (KIP-430) as a broker without an authorizer answers
//! them: every operation the resource type supports.
//!
//! Runs on: any core; pure constants. Bit `1 << code` stands for Kafka's `AclOperation`
//! code; the supported sets are Kafka 4's `AclEntry.supportedOperations`.

/// Kafka's `AclOperation` codes (0 UNKNOWN, 1 ANY and 2 ALL never appear in a bit field).
pub mod op {
    pub const READ: u8 = 3;
    pub const WRITE: u8 = 4;
    pub const CREATE: u8 = 5;
    pub const DELETE: u8 = 6;
    pub const ALTER: u8 = 7;
    pub const DESCRIBE: u8 = 8;
    pub const CLUSTER_ACTION: u8 = 9;
    pub const DESCRIBE_CONFIGS: u8 = 10;
    pub const ALTER_CONFIGS: u8 = 11;
    pub const IDEMPOTENT_WRITE: u8 = 12;
}

/// Kafka's marker for "authorized operations not requested".
pub const OMITTED: i32 = i32::MIN;

const fn bits(ops: &[u8]) -> i32 {
    let mut v = 0i32;
    let mut i = 0;
    while i < ops.len() {
        v |= 1 << ops[i];
        i += 1;
    }
    v
}

/// Topic: READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub const TOPIC: i32 = bits(&[
    op::READ,
    op::WRITE,
    op::CREATE,
    op::DELETE,
    op::ALTER,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
]);

/// Cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
pub const CLUSTER: i32 = bits(&[
    op::CREATE,
    op::ALTER,
    op::DESCRIBE,
    op::CLUSTER_ACTION,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
    op::IDEMPOTENT_WRITE,
]);

/// Group: READ, DELETE, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS (the last two since
/// Kafka 4's group configs).
pub const GROUP: i32 = bits(&[
    op::READ,
    op::DELETE,
    op::DESCRIBE,
    op::DESCRIBE_CONFIGS,
    op::ALTER_CONFIGS,
]);

/// The answer to a request that may ask for a resource's authorized operations.
pub fn answer(requested: bool, supported: i32) -> i32 {
    if requested { supported } else { OMITTED }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The bit fields equal the values a Kafka broker without an authorizer answers.
    #[test]
    fn bit_fields_match_kafka() {
        assert_eq!(TOPIC, 3576);
        assert_eq!(CLUSTER, 8096);
        assert_eq!(GROUP, 3400);
        assert_eq!(answer(false, TOPIC), i32::MIN);
    }
}
