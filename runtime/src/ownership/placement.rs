//! Which node runs each partition of a deployment.
//!
//! Placement is rendezvous hashing with bounded loads. Each partition ranks the members by a
//! hash of (member, deployment, partition); partitions are placed in order, each on the
//! highest-ranked member that still has room, where room is `ceil(P/N) + 1` partitions. So:
//! - every node computes the same placement from the same membership, with no coordination;
//! - no node holds more than `ceil(P/N) + 1` partitions of one deployment;
//! - a node joining or leaving moves about `P/N` partitions, the ones it gains or loses, plus
//!   the odd one pushed over a bound (measured in the tests below).
//!
//! A node also runs at most so many partitions of one tenant, over all the tenant's
//! deployments (its `max_instances`, which it announces in its membership record), so a
//! tenant's deployments are placed together ([`tenant_owners`]): each partition goes to the
//! highest-ranked member with room under both bounds, else to one with room for the tenant,
//! else (every able member is full) to the highest-ranked, where it waits for capacity and
//! `weir status` says so. The quotas are configuration, not load, so placement does not move
//! partitions back and forth as they fill up. Deployments that fewer members can run are
//! placed first, since they have fewer places to go.

use std::collections::{BTreeMap, HashMap};

use crate::control::DeploymentId;

/// The most partitions of one deployment that one of `members` members may hold.
pub fn capacity(partitions: u32, members: usize) -> u32 {
    let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
    partitions.div_ceil(members) + 1
}

/// One of a tenant's deployments, to be placed.
#[derive(Debug, Clone, Copy)]
pub struct Demand<'d, 'm> {
    /// Which.
    pub id: &'d DeploymentId,
    /// How many partitions it has.
    pub partitions: u32,
    /// The members able to run it, sorted.
    pub able: &'m [String],
}

/// The owner of every partition of each of one tenant's deployments, indexed by partition
/// (empty for a deployment that no member can run), where `room` says how many of the
/// tenant's partitions each member runs at most.
pub fn tenant_owners<'d, 'm>(
    demands: &[Demand<'d, 'm>],
    room: impl Fn(&str) -> u32,
) -> BTreeMap<&'d DeploymentId, Vec<&'m str>> {
    let mut order: Vec<&Demand<'d, 'm>> = demands.iter().collect();
    order.sort_by_key(|demand| (demand.able.len(), demand.id));
    let mut tenant_load: HashMap<&'m str, u32> = HashMap::new();
    let mut placed = BTreeMap::new();
    for demand in order {
        let members = demand.able;
        let bound = capacity(demand.partitions, members.len());
        let mut load = vec![0_u32; members.len()];
        let key = demand.id.key();
        let prefixes: Vec<u64> = (members.iter())
            .map(|member| prefix_hash(member, &key))
            .collect();
        let mut ranked: Vec<(u64, usize)> = Vec::with_capacity(members.len());
        let owners: Vec<&'m str> = (0..demand.partitions)
            .filter(|_| !members.is_empty())
            .map(|partition| {
                ranked.clear();
                ranked.extend(
                    (prefixes.iter().enumerate())
                        .map(|(i, prefix)| (score_from(*prefix, partition), i)),
                );
                // Highest score first; the member index breaks (unlikely) ties the same
                // everywhere because callers pass members sorted.
                ranked.sort_unstable_by(|a, b| b.cmp(a));
                let has_room = |i: usize| {
                    let member = members[i].as_str();
                    tenant_load.get(member).copied().unwrap_or(0) < room(member)
                };
                let chosen = ranked
                    .iter()
                    .find(|&&(_, i)| load[i] < bound && has_room(i))
                    .or_else(|| ranked.iter().find(|&&(_, i)| has_room(i)))
                    .or(ranked.first())
                    .map_or(0, |&(_, i)| i);
                load[chosen] += 1;
                let member = members[chosen].as_str();
                *tenant_load.entry(member).or_default() += 1;
                member
            })
            .collect();
        placed.insert(demand.id, owners);
    }
    placed
}

/// The owner of every partition of `deployment`, indexed by partition; empty without members.
/// (The tenant's other deployments and its quotas aside: see [`tenant_owners`].)
pub fn owners<'a>(
    deployment: &DeploymentId,
    partitions: u32,
    members: &'a [String],
) -> Vec<&'a str> {
    let demand = Demand {
        id: deployment,
        partitions,
        able: members,
    };
    tenant_owners(&[demand], |_| u32::MAX)
        .into_values()
        .next()
        .unwrap_or_default()
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

#[cfg(test)]
fn score(member: &str, deployment_key: &str, partition: u32) -> u64 {
    score_from(prefix_hash(member, deployment_key), partition)
}

/// The FNV-1a state after `<member>/<deployment_key>/`, the part of a score's key that all of
/// a deployment's partitions share.
fn prefix_hash(member: &str, deployment_key: &str) -> u64 {
    [member.as_bytes(), b"/", deployment_key.as_bytes(), b"/"]
        .into_iter()
        .flatten()
        .fold(FNV_OFFSET, |h, b| fnv(h, *b))
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn fnv(h: u64, b: u8) -> u64 {
    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
}

/// The score of the key `<member>/<deployment>/<partition>`, from the hash of its prefix.
fn score_from(prefix: u64, partition: u32) -> u64 {
    // 64-bit FNV-1a over the key's bytes (the partition in decimal) is stable across versions
    // and platforms; the splitmix64 finaliser spreads its bits for keys that differ only at
    // the end.
    let mut digits = [0_u8; 10];
    let mut n = partition;
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let mut x = digits[start..].iter().fold(prefix, |h, b| fnv(h, *b));
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
    fn scores_are_those_of_the_fnv_hash_of_the_whole_key() {
        // What earlier versions computed, so that nodes of both place alike.
        let whole = |key: &str| {
            let mut x = key.bytes().fold(FNV_OFFSET, fnv);
            x ^= x >> 30;
            x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x ^= x >> 27;
            x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        for partition in [0, 7, 10, 99, 1023, u32::MAX] {
            assert_eq!(
                score("node-a", "acme.orders", partition),
                whole(&format!("node-a/acme.orders/{partition}"))
            );
        }
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

    /// `owners` per deployment, with each member's room for the tenant.
    fn placed<'a>(
        deployments: &'a [(DeploymentId, u32)],
        able: &'a [String],
        room: &[(&str, u32)],
    ) -> BTreeMap<&'a DeploymentId, Vec<&'a str>> {
        let demands: Vec<Demand<'a, 'a>> = deployments
            .iter()
            .map(|(id, partitions)| Demand {
                id,
                partitions: *partitions,
                able,
            })
            .collect();
        tenant_owners(&demands, |member| {
            room.iter()
                .find(|(name, _)| *name == member)
                .map_or(u32::MAX, |(_, n)| *n)
        })
    }

    fn held(placed: &BTreeMap<&DeploymentId, Vec<&str>>, member: &str) -> usize {
        placed
            .values()
            .flatten()
            .filter(|owner| **owner == member)
            .count()
    }

    #[test]
    fn no_member_runs_more_of_a_tenant_than_its_room_over_all_the_tenants_deployments()
    -> anyhow::Result<()> {
        let all = members(&["a", "b", "c"]);
        for tenant in 0..50 {
            let deployments: Vec<(DeploymentId, u32)> = ["orders", "refunds", "audit"]
                .iter()
                .zip([8, 4, 5])
                .map(|(handler, p)| Ok((DeploymentId::new(&format!("t{tenant}"), handler)?, p)))
                .collect::<anyhow::Result<_>>()?;
            // 17 partitions, room for exactly 17.
            let placed = placed(&deployments, &all, &[("a", 2), ("b", 5), ("c", 10)]);
            assert_eq!(
                [held(&placed, "a"), held(&placed, "b"), held(&placed, "c")],
                [2, 5, 10],
                "tenant t{tenant}: {placed:?}"
            );
            for (id, partitions) in &deployments {
                assert_eq!(placed[id].len(), *partitions as usize, "{id}");
            }
        }
        Ok(())
    }

    #[test]
    fn partitions_beyond_every_members_room_go_to_their_best_ranked_member_to_wait() {
        let all = members(&["a", "b"]);
        for id in deployments() {
            let deployments = [(id, 6)];
            let placed = placed(&deployments, &all, &[("a", 1), ("b", 1)]);
            let id = &deployments[0].0;
            let owners = &placed[id];
            assert_eq!(owners.len(), 6, "every partition of {id} has an owner");
            // The room there is, is used.
            assert!(
                held(&placed, "a") >= 1 && held(&placed, "b") >= 1,
                "{placed:?}"
            );
            // Past the room there is, each goes to its best-ranked member.
            for (partition, owner) in (0..).zip(owners).skip(2) {
                let best = all
                    .iter()
                    .max_by_key(|member| score(member, &id.key(), partition))
                    .map(String::as_str);
                assert_eq!(Some(*owner), best, "{id} partition {partition}");
            }
        }
    }

    #[test]
    fn a_deployment_fewer_members_can_run_is_placed_first() -> anyhow::Result<()> {
        let only_a = members(&["a"]);
        let both = members(&["a", "b"]);
        let (narrow, wide) = (
            DeploymentId::new("t", "narrow")?,
            DeploymentId::new("t", "wide")?,
        );
        let demands = [
            Demand {
                id: &wide,
                partitions: 2,
                able: &both,
            },
            Demand {
                id: &narrow,
                partitions: 2,
                able: &only_a,
            },
        ];
        let placed = tenant_owners(&demands, |member| if member == "a" { 2 } else { 8 });
        assert_eq!(placed[&narrow], ["a", "a"]);
        assert_eq!(placed[&wide], ["b", "b"]);
        Ok(())
    }

    #[test]
    fn a_deployment_no_member_can_run_has_no_owners() -> anyhow::Result<()> {
        let id = DeploymentId::new("t", "h")?;
        let demand = Demand {
            id: &id,
            partitions: 4,
            able: &[],
        };
        assert_eq!(tenant_owners(&[demand], |_| 1)[&id], Vec::<&str>::new());
        Ok(())
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
