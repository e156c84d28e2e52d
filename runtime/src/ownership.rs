//! Which partitions of a deployment a node runs.
//!
//! Placement is rendezvous hashing over the live members: each partition goes to the member
//! with the highest score for it, so a member joining or leaving moves only the partitions it
//! gains or loses. Every node computes the same answer from the same membership.

use crate::resources::DeploymentId;

/// The partitions of `deployment` (of `partitions` in all) that `me` owns among `members`.
pub fn owned_partitions(
    deployment: &DeploymentId,
    partitions: u32,
    members: &[String],
    me: &str,
) -> Vec<u32> {
    (0..partitions)
        .filter(|p| owner(deployment, *p, members) == Some(me))
        .collect()
}

/// The member that owns `partition`, if there are any members.
pub fn owner<'a>(
    deployment: &DeploymentId,
    partition: u32,
    members: &'a [String],
) -> Option<&'a str> {
    members
        .iter()
        .max_by_key(|member| score(member, deployment, partition))
        .map(String::as_str)
}

fn score<'a>(member: &'a str, deployment: &DeploymentId, partition: u32) -> (u64, &'a str) {
    let key = format!("{member}/{}/{partition}", deployment.key());
    // 64-bit FNV-1a is stable across versions and platforms; the splitmix64 finaliser spreads
    // its bits for keys that differ only at the end. The member name breaks (unlikely) ties.
    let mut x = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    (x, member)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
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
    fn every_partition_has_exactly_one_owner() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        let all = members(&["a", "b", "c"]);
        let mut owned: Vec<u32> = all
            .iter()
            .flat_map(|m| owned_partitions(&id, 64, &all, m))
            .collect();
        owned.sort_unstable();
        assert_eq!(owned, (0..64).collect::<Vec<_>>());
        Ok(())
    }

    #[test]
    fn a_joining_node_takes_partitions_only_for_itself() -> anyhow::Result<()> {
        let id = DeploymentId::new("acme", "orders")?;
        let before = members(&["a", "b", "c"]);
        let after = members(&["a", "b", "c", "d"]);
        for p in 0..256 {
            let new_owner = owner(&id, p, &after);
            if new_owner != Some("d") {
                assert_eq!(
                    owner(&id, p, &before),
                    new_owner,
                    "partition {p} moved needlessly"
                );
            }
        }
        Ok(())
    }
}
