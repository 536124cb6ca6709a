//! The group coordinator: Kafka's classic consumer-group protocol and committed offsets.
//!
//! Placement: a group lives on the core that owns partition
//! [`coordinator_partition`]`(group_id)` of the internal topic `__consumer_offsets`, computed exactly as
//! Kafka computes it, so all state of one group is on one core and needs no locks. That core keeps the
//! group in memory ([`coordinator::GroupCoordinator`]), writes every change that must survive a restart
//! (offset commits, group metadata after a rebalance) as records to that partition in Kafka's own
//! key/value schemas ([`records`]), and replays the partition when it opens.
//!
//! The protocol itself ([`state::Group`]) is a pure state machine: it is given the time and returns the
//! answers to deliver; timers, waiting requests and the log stay in [`coordinator`].

pub mod coordinator;
pub mod hash_order;
pub mod records;
pub mod staged;
pub mod state;
pub mod timers;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub use crate::config::GroupConfig;

/// Java's `String.hashCode()`: `s[0]*31^(n-1) + ... + s[n-1]` over UTF-16 code units, wrapping.
pub fn java_string_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(c as i32))
}

/// Kafka's `Utils.abs`: `Math.abs` except that `Integer.MIN_VALUE` maps to 0.
pub fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

/// The `__consumer_offsets` partition that holds `group_id` (Kafka's `partitionFor`).
pub fn coordinator_partition(group_id: &str, partitions: i32) -> i32 {
    assert!(partitions > 0);
    kafka_abs(java_string_hash(group_id)) % partitions
}

/// Milliseconds since the Unix epoch (commit timestamps and deadlines).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected values computed once with Java 17 (`/tmp/jv/Gold.java`, run against kafka-clients 4.4.0):
    /// `int h = s.hashCode(); int abs = (h == Integer.MIN_VALUE) ? 0 : Math.abs(h); abs % 50`.
    #[test]
    fn coordinator_hash_matches_java() {
        let cases: &[(&str, i32, i32)] = &[
            ("", 0, 0),
            ("a", 97, 47),
            ("group", 98629247, 47),
            ("my-group", -1906497762, 12),
            ("console-consumer-12345", 158455506, 6),
            ("test-group-0", 2060176935, 35),
            // Both hash to Integer.MIN_VALUE: Utils.abs maps that to 0.
            ("polygenelubricants", -2147483648, 0),
            ("GydZG_", -2147483648, 0),
            ("DESIGNING WORKHORSES", 2147394275, 25),
            ("perf-consumer-42", -412512559, 9),
        ];
        for &(s, hash, partition) in cases {
            assert_eq!(java_string_hash(s), hash, "hashCode of {s:?}");
            assert_eq!(
                coordinator_partition(s, 50),
                partition,
                "partition of {s:?}"
            );
        }
        // Non-ASCII: Java hashes UTF-16 code units ("é" is one unit, U+1F600 two).
        assert_eq!(java_string_hash("é"), 0xe9);
        assert_eq!(
            java_string_hash("😀"),
            0xd83di32.wrapping_mul(31).wrapping_add(0xde00)
        );
    }
}
