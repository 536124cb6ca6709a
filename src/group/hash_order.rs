//! The order in which Kafka 4.4 lists the results of a DeleteGroups request.
//!
//! Kafka's `GroupCoordinatorService.deleteGroups` sorts the (distinct) group ids into a
//! `HashMap<TopicPartition, List<String>>` by their `__consumer_offsets` partition (`computeIfAbsent`),
//! hands each partition's list to its coordinator as a `HashSet<String>` (`new HashSet<>(list)`), and
//! concatenates the answers in the map's iteration order. The answer order is therefore an artefact of
//! `java.util.HashMap`: buckets in index order, a key's bucket being `(h ^ (h >>> 16)) & (capacity - 1)`
//! of its `hashCode()`. Within a bucket `put` appends and `computeIfAbsent` prepends. Clients read the
//! answer as a map, but Ringtide answers in the same order so that answers compare byte for byte.
//!
//! Not reproduced: a bucket that Java turns into a tree (8 or more keys in one bucket of a table of 64 or
//! more), which needs dozens of colliding group ids of one coordinator partition in one request.

use super::{coordinator_partition, java_string_hash, OFFSETS_TOPIC};

/// `java.util.HashMap.hash`: the key's hash code with its high half folded into the low half.
fn spread(hash: i32) -> u32 {
    let h = hash as u32;
    h ^ (h >> 16)
}

/// The table size of a `java.util.HashMap` that starts at `capacity` (a power of two) after `n` distinct
/// insertions: it doubles whenever the size exceeds three quarters of the capacity (load factor 0.75).
fn grown_capacity(mut capacity: usize, n: usize) -> usize {
    while n > capacity / 4 * 3 {
        capacity *= 2;
    }
    capacity
}

/// Kafka's `TopicPartition.hashCode()` for a partition of `__consumer_offsets`.
fn offsets_partition_hash(partition: i32) -> i32 {
    31i32
        .wrapping_mul(31 + partition)
        .wrapping_add(java_string_hash(OFFSETS_TOPIC))
}

/// The iteration order of `keys` (distinct, in insertion order) in a `java.util.HashMap` of `capacity`
/// buckets: by bucket, and within a bucket in insertion order, or in reverse for `computeIfAbsent`.
fn iteration_order<K: Copy>(
    keys: &[K],
    hash: impl Fn(K) -> i32,
    capacity: usize,
    prepends: bool,
) -> Vec<K> {
    assert!(capacity.is_power_of_two());
    let mask = capacity as u32 - 1;
    let mut order: Vec<(u32, isize, K)> = keys
        .iter()
        .enumerate()
        .map(|(i, &k)| {
            let within = if prepends { -(i as isize) } else { i as isize };
            (spread(hash(k)) & mask, within, k)
        })
        .collect();
    order.sort_by_key(|&(bucket, within, _)| (bucket, within));
    order.into_iter().map(|(_, _, k)| k).collect()
}

/// The distinct group ids of a DeleteGroups request in the order Kafka 4.4 answers them, for a
/// `__consumer_offsets` topic of `partitions` partitions.
pub fn delete_groups_order(groups: &[String], partitions: i32) -> Vec<String> {
    // KafkaApis: `groups.distinct`, first occurrence kept (a set: a request may name many groups).
    let mut seen = std::collections::HashSet::with_capacity(groups.len());
    let distinct: Vec<&str> = groups
        .iter()
        .map(String::as_str)
        .filter(|g| seen.insert(*g))
        .collect();
    // At most one entry per `__consumer_offsets` partition, so the linear search stays short.
    let mut by_partition: Vec<(i32, Vec<&str>)> = Vec::new();
    for g in distinct {
        let p = coordinator_partition(g, partitions);
        match by_partition.iter_mut().find(|(q, _)| *q == p) {
            Some((_, list)) => list.push(g),
            None => by_partition.push((p, vec![g])),
        }
    }
    let order: Vec<i32> = by_partition.iter().map(|(p, _)| *p).collect();
    let capacity = grown_capacity(16, order.len());
    let mut out = Vec::new();
    for p in iteration_order(&order, offsets_partition_hash, capacity, true) {
        let list = &by_partition
            .iter()
            .find(|(q, _)| *q == p)
            .expect("listed")
            .1;
        // `new HashSet<>(list)`: capacity for max(size / .75f + 1, 16) elements, never grown.
        let wanted = ((list.len() as f32 / 0.75f32) as usize + 1).max(16);
        let capacity = wanted.next_power_of_two();
        out.extend(
            iteration_order(list, java_string_hash, capacity, false)
                .into_iter()
                .map(str::to_string),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(groups: &[&str]) -> Vec<String> {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        delete_groups_order(&groups, 50)
    }

    /// Orders a real Kafka 4.4 broker answered (50 `__consumer_offsets` partitions).
    #[test]
    fn orders_answered_by_kafka_4_4() {
        assert_eq!(
            order(&["gdel", "nosuch", "busy", "", "gdel"]),
            ["", "nosuch", "gdel", "busy"]
        );
        // Partitions 7 and 23 share a bucket of 16: the one inserted later comes first. The six groups of
        // partition 7 come in HashSet order.
        assert_eq!(
            order(&[
                "dg-269", "dg-85", "dh-172", "dg-232", "dg-106", "dh-44", "dg-85", "dg-188",
                "dg-151"
            ]),
            ["dh-172", "dh-44", "dg-232", "dg-188", "dg-151", "dg-85", "dg-106", "dg-269"]
        );
    }

    /// 95 group ids (90 distinct, spread over most partitions: the map grows to 64 and 128 buckets), as
    /// a real Kafka 4.4 broker answered them.
    #[test]
    fn many_groups_as_kafka_4_4() {
        const REQUEST: &str = "grp-653159 grp-267853 grp-777820 grp-375951 grp-833820 grp-723985 grp-988230 grp-882388 \
             grp-775839 grp-683704 grp-967127 grp-555787 grp-30414 grp-881168 grp-488240 grp-813651 \
             grp-989181 grp-261150 grp-680499 grp-54372 grp-944662 grp-164470 grp-118705 grp-389853 \
             grp-491854 grp-910631 grp-258550 grp-399253 grp-570174 grp-106927 grp-601820 grp-261442 \
             grp-13751 grp-766701 grp-227257 grp-427977 grp-293058 grp-190920 grp-960857 grp-909596 \
             grp-802921 grp-408354 grp-167357 grp-798936 grp-835869 grp-75425 grp-145508 grp-647942 \
             grp-647445 grp-466444 grp-132853 grp-138664 grp-1861 grp-913734 grp-5571 grp-219630 grp-811171 \
             grp-225948 grp-173913 grp-914785 grp-174571 grp-303358 grp-328887 grp-208550 grp-565416 \
             grp-918677 grp-710756 grp-656125 grp-214726 grp-190493 grp-986684 grp-724190 grp-206442 \
             grp-937156 grp-401838 grp-313302 grp-22618 grp-378735 grp-435061 grp-174017 grp-981249 \
             grp-152779 grp-276626 grp-68303 grp-347974 grp-315997 grp-857106 grp-632406 grp-614613 grp-3547 \
             grp-653159 grp-267853 grp-777820 grp-375951 grp-833820";
        const ANSWER: &str = "grp-219630 grp-632406 grp-190920 grp-570174 grp-401838 grp-811171 grp-775839 grp-118705 \
             grp-214726 grp-313302 grp-601820 grp-882388 grp-555787 grp-225948 grp-258550 grp-683704 \
             grp-835869 grp-653159 grp-435061 grp-167357 grp-766701 grp-724190 grp-145508 grp-378735 \
             grp-206442 grp-909596 grp-328887 grp-190493 grp-710756 grp-315997 grp-399253 grp-152779 \
             grp-614613 grp-986684 grp-777820 grp-914785 grp-408354 grp-723985 grp-813651 grp-261442 \
             grp-798936 grp-881168 grp-303358 grp-3547 grp-988230 grp-164470 grp-647942 grp-802921 grp-967127 \
             grp-937156 grp-491854 grp-647445 grp-174017 grp-276626 grp-466444 grp-918677 grp-138664 \
             grp-293058 grp-913734 grp-22618 grp-488240 grp-375951 grp-427977 grp-5571 grp-680499 grp-989181 \
             grp-261150 grp-174571 grp-960857 grp-656125 grp-173913 grp-857106 grp-565416 grp-389853 \
             grp-106927 grp-227257 grp-75425 grp-944662 grp-267853 grp-13751 grp-1861 grp-347974 grp-833820 \
             grp-981249 grp-132853 grp-30414 grp-910631 grp-208550 grp-54372 grp-68303";
        let request: Vec<&str> = REQUEST.split_whitespace().collect();
        let answer: Vec<&str> = ANSWER.split_whitespace().collect();
        assert_eq!(order(&request), answer);
    }

    /// `TopicPartition("__consumer_offsets", p).hashCode()` as Java computes it.
    #[test]
    fn partition_hash_matches_java() {
        assert_eq!(offsets_partition_hash(7), -970370191);
        assert_eq!(offsets_partition_hash(23), -970369695);
    }

    #[test]
    fn every_group_once() {
        let groups: Vec<String> = (0..500).map(|i| format!("g{}", i % 300)).collect();
        let mut got = delete_groups_order(&groups, 50);
        assert_eq!(got.len(), 300);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 300);
    }
}
