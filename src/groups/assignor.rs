//! The server-side assignors of the consumer group protocol (KIP-848): `uniform` (the
//! default; sticky and balanced) and `range` (per topic, contiguous ranges in member-id
//! order). Pure functions from the members' subscriptions, the topics' partition counts and
//! the previous target assignment to the new target assignment.
//!
//! Runs on: the group's coordinator shard (called when the group epoch passed the
//! assignment epoch).

use std::collections::{BTreeMap, BTreeSet};

/// Topic name -> partitions.
pub type TopicPartitions = BTreeMap<String, BTreeSet<i32>>;

/// The assignors osprey serves, by their Kafka names.
pub const ASSIGNORS: &[&str] = &[UNIFORM, RANGE];
pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";

/// One member's view for the assignor: its subscribed (existing) topics and its previous
/// target assignment.
pub struct MemberSpec<'a> {
    pub id: &'a str,
    pub topics: &'a BTreeSet<String>,
    pub previous: Option<&'a TopicPartitions>,
}

/// The target assignment of every member (every member gets an entry, maybe empty).
pub fn assign(
    assignor: &str,
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    match assignor {
        RANGE => range(members, partitions),
        _ => uniform(members, partitions),
    }
}

fn empty_result(members: &[MemberSpec<'_>]) -> BTreeMap<String, TopicPartitions> {
    members
        .iter()
        .map(|m| (m.id.to_string(), TopicPartitions::new()))
        .collect()
}

/// Kafka's range assignor: for each topic, its subscribers in member-id order get
/// contiguous ranges, the first `partitions % subscribers` one partition more.
pub fn range(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out = empty_result(members);
    for (topic, &n) in partitions {
        let mut subs: Vec<&str> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .map(|m| m.id)
            .collect();
        if subs.is_empty() || n <= 0 {
            continue;
        }
        subs.sort_unstable();
        let k = subs.len() as i32;
        let (base, extra) = (n / k, n % k);
        let mut next = 0;
        for (i, id) in subs.iter().enumerate() {
            let count = base + i32::from((i as i32) < extra);
            if count > 0
                && let Some(tp) = out.get_mut(*id)
            {
                tp.entry(topic.clone())
                    .or_default()
                    .extend(next..next + count);
            }
            next += count;
        }
    }
    out
}

/// Kafka's uniform assignor, sticky and balanced: every member keeps what it had as long
/// as it is still subscribed and under its share; the rest goes, partition by partition,
/// to the eligible member holding the fewest (ties: member id). With identical
/// subscriptions the result is exactly balanced (counts differ by at most one); with
/// differing subscriptions it is the greedy balance (Kafka's general builder also moves
/// partitions between members afterwards; osprey does not).
pub fn uniform(
    members: &[MemberSpec<'_>],
    partitions: &BTreeMap<String, i32>,
) -> BTreeMap<String, TopicPartitions> {
    let mut out = empty_result(members);
    if members.is_empty() {
        return out;
    }
    // Every partition of a topic someone subscribes to.
    let mut all: Vec<(String, i32)> = Vec::new();
    for (topic, &n) in partitions {
        if members.iter().any(|m| m.topics.contains(topic)) {
            all.extend((0..n.max(0)).map(|p| (topic.clone(), p)));
        }
    }
    // Each member's share of the partitions it could take: ceil(eligible / subscribers of
    // the same topics), computed per member as the share of a homogeneous group.
    let share = |m: &MemberSpec<'_>| -> usize {
        let eligible = all.iter().filter(|(t, _)| m.topics.contains(t)).count();
        let peers = members
            .iter()
            .filter(|o| o.topics.iter().any(|t| m.topics.contains(t)))
            .count()
            .max(1);
        eligible.div_ceil(peers)
    };
    let total = all.len();
    let n = members.len();
    // With identical subscriptions, exactly `total % n` members may hold one more.
    let homogeneous = members.iter().all(|m| m.topics == members[0].topics);
    let (floor, mut extra) = (total / n, total % n);
    let mut count: BTreeMap<&str, usize> = members.iter().map(|m| (m.id, 0)).collect();
    let mut taken: BTreeSet<(String, i32)> = BTreeSet::new();
    // Sticky pass, members in id order for determinism.
    let mut order: Vec<&MemberSpec<'_>> = members.iter().collect();
    order.sort_by_key(|m| m.id);
    for m in &order {
        let Some(prev) = m.previous else { continue };
        let cap = if homogeneous { floor } else { share(m) };
        let mut kept = 0usize;
        for (topic, ps) in prev {
            let Some(&n) = partitions.get(topic) else {
                continue;
            };
            if !m.topics.contains(topic) {
                continue;
            }
            for &p in ps {
                if p >= n || taken.contains(&(topic.clone(), p)) {
                    continue;
                }
                let over = kept >= cap;
                if over && !(homogeneous && extra > 0 && kept == cap) {
                    continue;
                }
                if over {
                    extra -= 1;
                }
                kept += 1;
                taken.insert((topic.clone(), p));
                out.get_mut(m.id)
                    .map(|tp| tp.entry(topic.clone()).or_default().insert(p));
            }
        }
        count.insert(m.id, kept);
    }
    // The rest, to the least loaded eligible member.
    for (topic, p) in all {
        if taken.contains(&(topic.clone(), p)) {
            continue;
        }
        let best = order
            .iter()
            .filter(|m| m.topics.contains(&topic))
            .min_by_key(|m| (count[m.id], m.id));
        if let Some(m) = best {
            *count.get_mut(m.id).unwrap_or(&mut 0) += 1;
            out.get_mut(m.id)
                .map(|tp| tp.entry(topic.clone()).or_default().insert(p));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn count(tp: &TopicPartitions) -> usize {
        tp.values().map(BTreeSet::len).sum()
    }

    fn no_overlap_all_covered(
        out: &BTreeMap<String, TopicPartitions>,
        partitions: &BTreeMap<String, i32>,
    ) {
        let mut seen = BTreeSet::new();
        for tp in out.values() {
            for (t, ps) in tp {
                for p in ps {
                    assert!(seen.insert((t.clone(), *p)), "{t}-{p} twice");
                }
            }
        }
        let total: i32 = partitions.values().sum();
        assert_eq!(seen.len(), total as usize);
    }

    #[test]
    fn uniform_balances_and_is_sticky() {
        let sub = topics(&["a", "b"]);
        let parts: BTreeMap<String, i32> = [("a".into(), 4), ("b".into(), 3)].into();
        let ms = [
            MemberSpec {
                id: "m1",
                topics: &sub,
                previous: None,
            },
            MemberSpec {
                id: "m2",
                topics: &sub,
                previous: None,
            },
        ];
        let first = uniform(&ms, &parts);
        no_overlap_all_covered(&first, &parts);
        let c: Vec<usize> = first.values().map(count).collect();
        assert!(c.iter().max().unwrap() - c.iter().min().unwrap() <= 1);
        // A third member: the first two keep what they can, counts stay balanced.
        let ms = [
            MemberSpec {
                id: "m1",
                topics: &sub,
                previous: first.get("m1"),
            },
            MemberSpec {
                id: "m2",
                topics: &sub,
                previous: first.get("m2"),
            },
            MemberSpec {
                id: "m3",
                topics: &sub,
                previous: None,
            },
        ];
        let second = uniform(&ms, &parts);
        no_overlap_all_covered(&second, &parts);
        let c: Vec<usize> = second.values().map(count).collect();
        assert!(
            c.iter().max().unwrap() - c.iter().min().unwrap() <= 1,
            "{c:?}"
        );
        for id in ["m1", "m2"] {
            for (t, ps) in &second[id] {
                for p in ps {
                    assert!(first[id][t].contains(p), "{id} got {t}-{p} it did not have");
                }
            }
        }
    }

    #[test]
    fn uniform_respects_subscriptions() {
        let a = topics(&["a"]);
        let ab = topics(&["a", "b"]);
        let parts: BTreeMap<String, i32> = [("a".into(), 2), ("b".into(), 4)].into();
        let ms = [
            MemberSpec {
                id: "x",
                topics: &a,
                previous: None,
            },
            MemberSpec {
                id: "y",
                topics: &ab,
                previous: None,
            },
        ];
        let out = uniform(&ms, &parts);
        no_overlap_all_covered(&out, &parts);
        assert!(!out["x"].contains_key("b"));
        assert_eq!(count(&out["y"]), 4 + 2 - count(&out["x"]));
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let sub = topics(&["t"]);
        let parts: BTreeMap<String, i32> = [("t".into(), 5)].into();
        let ms = [
            MemberSpec {
                id: "b",
                topics: &sub,
                previous: None,
            },
            MemberSpec {
                id: "a",
                topics: &sub,
                previous: None,
            },
        ];
        let out = range(&ms, &parts);
        assert_eq!(out["a"]["t"], [0, 1, 2].into());
        assert_eq!(out["b"]["t"], [3, 4].into());
        no_overlap_all_covered(&out, &parts);
    }

    #[test]
    fn no_members_or_topics() {
        let parts: BTreeMap<String, i32> = [("t".into(), 3)].into();
        assert!(uniform(&[], &parts).is_empty());
        let none = topics(&[]);
        let ms = [MemberSpec {
            id: "a",
            topics: &none,
            previous: None,
        }];
        assert_eq!(count(&uniform(&ms, &parts)["a"]), 0);
        assert_eq!(count(&range(&ms, &parts)["a"]), 0);
    }
}
