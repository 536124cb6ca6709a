//! ACL operations and resource types as Kafka numbers them, and the authorized operations a response
//! reports (Metadata's topic and cluster operations, DescribeCluster, DescribeGroups).
//!
//! The answer is a 32-bit field with bit `code` set for every allowed operation (Kafka's
//! `Utils.to32BitField` of the operation codes). Kafka computes it over the operations the resource type
//! supports (`AclEntry.supportedOperations`): without an authorizer every one of them is allowed, so the
//! field is constant per resource type. When a request does not ask for the operations, the field keeps
//! the schema default [`NOT_REQUESTED`].
//!
//! Ringtide has no authorizer yet: [`authorized_operations`] is where one will filter the supported set.

/// The value of an authorized-operations field that was not asked for (the schema default).
pub const NOT_REQUESTED: i32 = i32::MIN;

/// Kafka's `AclOperation` codes (`org.apache.kafka.common.acl.AclOperation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum AclOperation {
    Unknown = 0,
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
    TwoPhaseCommit = 15,
}

/// Kafka's concrete `ResourceType`s, with their wire codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ResourceType {
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

impl ResourceType {
    /// The operations an ACL on this resource type can grant (Kafka 4.4's `AclEntry.supportedOperations`).
    pub const fn supported_operations(self) -> &'static [AclOperation] {
        use AclOperation::*;
        match self {
            ResourceType::Topic => &[
                Read,
                Write,
                Create,
                Describe,
                Delete,
                Alter,
                DescribeConfigs,
                AlterConfigs,
            ],
            ResourceType::Group => &[Read, Describe, Delete, DescribeConfigs, AlterConfigs],
            ResourceType::Cluster => &[
                Create,
                ClusterAction,
                DescribeConfigs,
                AlterConfigs,
                IdempotentWrite,
                Alter,
                Describe,
            ],
            ResourceType::TransactionalId => &[Describe, Write, TwoPhaseCommit],
            ResourceType::DelegationToken => &[Describe],
            ResourceType::User => &[CreateTokens, DescribeTokens],
        }
    }
}

/// The bit field of a set of operations: bit `code` for each.
pub const fn bit_field(ops: &[AclOperation]) -> i32 {
    let mut bits = 0i32;
    let mut i = 0;
    while i < ops.len() {
        bits |= 1 << (ops[i] as u8);
        i += 1;
    }
    bits
}

/// The operations allowed on a resource of type `resource`: with no authorizer, all it supports.
pub const fn authorized_operations(resource: ResourceType) -> i32 {
    bit_field(resource.supported_operations())
}

/// The authorized-operations field of an answer: the operations if the request asked for them, else
/// [`NOT_REQUESTED`].
pub const fn field(requested: bool, resource: ResourceType) -> i32 {
    if requested {
        authorized_operations(resource)
    } else {
        NOT_REQUESTED
    }
}

// Every operation code fits the 32-bit field.
const _: () = assert!((AclOperation::TwoPhaseCommit as u8) < 32);

#[cfg(test)]
mod tests {
    use super::*;

    /// The values a Kafka 4.4 broker without an authorizer answered (tests/integration/
    /// test_authorized_operations.py asks both brokers).
    #[test]
    fn kafka_4_4_values_without_authorizer() {
        assert_eq!(authorized_operations(ResourceType::Topic), 3576);
        assert_eq!(authorized_operations(ResourceType::Group), 3400);
        assert_eq!(authorized_operations(ResourceType::Cluster), 8096);
        assert_eq!(field(false, ResourceType::Topic), i32::MIN);
    }

    #[test]
    fn bit_field_sets_one_bit_per_code() {
        assert_eq!(bit_field(&[]), 0);
        assert_eq!(
            bit_field(&[AclOperation::Read, AclOperation::Describe]),
            (1 << 3) | (1 << 8)
        );
        assert_eq!(
            authorized_operations(ResourceType::TransactionalId),
            (1 << 4) | (1 << 8) | (1 << 15)
        );
    }
}
