//! Which node runs each partition of a deployment.
//!
//! Placement is rendezvous hashing with bounded loads. Each partition ranks the members by a
//! hash of (member, deployment, partition); partitions are placed in order, each on the
//! highest-ranked member that still has room, where room is `ceil(P/N) + 1` partitions. So:
//! - every node computes the same placement from the same membership, with no coordination;
//! - no node holds more than `ceil(P/N) + 1` partitions of one deployment;
//! - a node joining or leaving moves about `P/N` partitions, the ones it gains or loses, plus
//!   the odd one pushed over a bound (measured in the tests below).

use crate::control::DeploymentId;

/// The most partitions of one deployment that one of `members` members may hold.
pub fn capacity(partitions: u32, members: usize) -> u32 {
    let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    partitions.div_ceil(members) + 1
}

/// The owner of every partition of `deployment`, indexed by partition; empty without members.
pub fn owners<'a>(
    deployment: &DeploymentId,
    partitions: u32,
    members: &'a [String],
) -> Vec<&'a str> {
    if members.is_empty() {
        return Vec::new();
    }
    let room = capacity(partitions, members.len());
    let mut load = vec![0_u32; members.len()];
    let key = deployment.key();
    (0..partitions)
        .map(|partition| {
            let mut ranked: Vec<(u64, usize)> = members
                .iter()
                .enumerate()
                .map(|(i, member)| (score(member, &key, partition), i))
                .collect();
            // Highest score first; the member index breaks (unlikely) ties the same everywhere
            // because callers pass members sorted.
            ranked.sort_unstable_by(|a, b| b.cmp(a));
            // Some member always has room: members × capacity ≥ partitions.
            let chosen = ranked
                .iter()
                .find(|&&(_, i)| load[i] < room)
                .or(ranked.first())
                .map_or(0, |&(_, i)| i);
            load[chosen] += 1;
            members[chosen].as_str()
        })
        .collect()
}

/// The partitions of `deployment` that `me` owns among `members`.
pub fn owned_partitions(
    deployment: &DeploymentId,
    partitions: u32,
    members: &[String],
    me: &str,
) -> Vec<u32> {
    owners(deployment, partitions, members)
        .into_iter()
        .zip(0..)
        .filter(|&(owner, _)| owner == me)
        .map(|(_, partition)| partition)
        .collect()
}

fn score(member: &str, deployment_key: &str, partition: u32) -> u64 {
    let key = format!("{member}/{deployment_key}/{partition}");
    // 64-bit FNV-1a is stable across versions and platforms; the splitmix64 finaliser spreads
    // its bits for keys that differ only at the end.
    let mut x = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn deployments() -> impl Iterator<Item = DeploymentId> {
        (0..200).filter_map(|i| DeploymentId::new(&format!("t{i}"), "h").ok())
    }

    fn moved(before: &[&str], after: &[&str]) -> usize {
        before.iter().zip(after).filter(|(b, a)| b != a).count()
    }

    #[test]
    fn a_single_node_owns_every_partition() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        assert_eq!(
            owned_partitions(&id, 8, &members(&["a"]), "a"),
            (0..8).collect::<Vec<_>>()
        );
        Ok(())
    }

    #[test]
    fn every_partition_has_exactly_one_owner_and_no_node_exceeds_the_bound() {
        for (n, p) in [(3, 16), (4, 16), (3, 64), (5, 7), (16, 4)] {
            let all: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
            for id in deployments() {
                let mut owned: Vec<u32> = all
                    .iter()
                    .flat_map(|m| {
                        let mine = owned_partitions(&id, p, &all, m);
                        assert!(mine.len() as u32 <= capacity(p, n), "{m} holds {mine:?}");
                        mine
                    })
                    .collect();
                owned.sort_unstable();
                assert_eq!(owned, (0..p).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn a_join_or_a_leave_moves_about_p_over_n_partitions() {
        let three = members(&["a", "b", "c"]);
        let four = members(&["a", "b", "c", "d"]);
        let (mut joined, mut left) = (0, 0);
        for id in deployments() {
            let (before, after) = (owners(&id, 16, &three), owners(&id, 16, &four));
            joined += moved(&before, &after);
            // Every partition the newcomer gained moved; anything else that moved was pushed
            // over a bound, which must stay rare.
            let gained = after.iter().filter(|o| **o == "d").count();
            assert!(
                moved(&before, &after) <= gained + 3,
                "{id}: {before:?} -> {after:?}"
            );
            left += moved(&after, &before);
        }
        let per_deployment = |total: usize| total as f64 / 200.0;
        // Ideal: 16/4 = 4 partitions move when d joins, and the same 4 come back when it leaves.
        assert!(
            per_deployment(joined) < 4.0 * 1.25,
            "join moved {}",
            per_deployment(joined)
        );
        assert!(
            per_deployment(left) < 4.0 * 1.25,
            "leave moved {}",
            per_deployment(left)
        );
    }
}
