//! How a route chooses one of its clusters.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::ClusterId;

/// A route's way of choosing among its clusters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Its one cluster.
    Single,
    /// The first healthy cluster, in the order given.
    Failover,
    /// Healthy clusters in turn.
    RoundRobin,
    /// Healthy clusters in proportion to their weights.
    Weighted,
    /// The healthy cluster with the fewest requests in flight through MCA.
    LeastRequests,
    /// A healthy cluster chosen by the object's namespace and name (rendezvous hashing), so
    /// every request for one object lands on one cluster while that cluster is healthy, and
    /// only its objects move when it is not.
    ConsistentHash,
    /// Every healthy cluster at once: reads merged into one view, writes refused.
    FanOut,
}

impl Strategy {
    /// The configuration's name for each strategy.
    pub const NAMES: [(&'static str, Strategy); 7] = [
        ("single", Strategy::Single),
        ("failover", Strategy::Failover),
        ("roundRobin", Strategy::RoundRobin),
        ("weighted", Strategy::Weighted),
        ("leastRequests", Strategy::LeastRequests),
        ("consistentHash", Strategy::ConsistentHash),
        ("fanOut", Strategy::FanOut),
    ];

    /// The strategy called `name` in the configuration.
    pub fn parse(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|(_, strategy)| *strategy)
    }
}

/// What a strategy knows about the clusters.
pub trait ClusterView {
    /// Whether requests may go to the cluster.
    fn healthy(&self, cluster: ClusterId) -> bool;
    /// Requests in flight to the cluster.
    fn in_flight(&self, cluster: ClusterId) -> usize;
}

/// One candidate cluster of a target.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The cluster.
    pub id: ClusterId,
    /// Its name, which consistent hashing uses so that choices survive reordering.
    pub name: String,
    /// Its weight.
    pub weight: u32,
}

/// Chooses a healthy candidate; `turn` is the route's request counter and `key` the object's
/// `namespace/name`.
pub fn pick(
    strategy: Strategy,
    candidates: &[Candidate],
    view: &impl ClusterView,
    turn: &AtomicUsize,
    key: &str,
) -> Option<ClusterId> {
    let healthy = || candidates.iter().filter(|c| view.healthy(c.id));
    let chosen = match strategy {
        // A fan-out's one cluster, when one must be named: the first healthy.
        Strategy::Single | Strategy::Failover | Strategy::FanOut => healthy().next(),
        Strategy::RoundRobin => {
            let count = healthy().count();
            if count == 0 {
                return None;
            }
            healthy().nth(turn.fetch_add(1, Ordering::Relaxed) % count)
        }
        Strategy::Weighted => {
            let total: u64 = healthy().map(|c| u64::from(c.weight)).sum();
            if total == 0 {
                return None;
            }
            let mut point = turn.fetch_add(1, Ordering::Relaxed) as u64 % total;
            healthy().find(|c| {
                let inside = point < u64::from(c.weight);
                point = point.saturating_sub(u64::from(c.weight));
                inside
            })
        }
        Strategy::LeastRequests => healthy().min_by_key(|c| view.in_flight(c.id)),
        Strategy::ConsistentHash => healthy().max_by_key(|c| rendezvous(key, &c.name)),
    };
    chosen.map(|c| c.id)
}

/// FNV-1a of `key`, a separator and `cluster`: a stable hash (the same across runs, versions
/// and machines), which rendezvous hashing needs so objects keep their cluster.
fn rendezvous(key: &str, cluster: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0]).chain(cluster.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // FNV's low bits mix poorly for short inputs; finish with a 64-bit avalanche.
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct View {
        down: Vec<ClusterId>,
        in_flight: Vec<usize>,
    }

    impl ClusterView for View {
        fn healthy(&self, cluster: ClusterId) -> bool {
            !self.down.contains(&cluster)
        }
        fn in_flight(&self, cluster: ClusterId) -> usize {
            self.in_flight[cluster]
        }
    }

    fn candidates(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(id, weight)| Candidate {
                id,
                name: format!("cluster-{id}"),
                weight: *weight,
            })
            .collect()
    }

    fn all_up() -> View {
        View {
            down: vec![],
            in_flight: vec![0; 4],
        }
    }

    fn picks(strategy: Strategy, weights: &[u32], view: &View, count: usize) -> Vec<ClusterId> {
        let turn = AtomicUsize::new(0);
        let candidates = candidates(weights);
        (0..count)
            .map(|_| pick(strategy, &candidates, view, &turn, "ns/name").unwrap())
            .collect()
    }

    #[test]
    fn failover_takes_the_first_healthy_in_order() {
        assert_eq!(picks(Strategy::Failover, &[1, 1, 1], &all_up(), 2), [0, 0]);
        let first_down = View {
            down: vec![0],
            ..all_up()
        };
        assert_eq!(
            picks(Strategy::Failover, &[1, 1, 1], &first_down, 2),
            [1, 1]
        );
        let all_down = View {
            down: vec![0, 1, 2],
            ..all_up()
        };
        let turn = AtomicUsize::new(0);
        assert_eq!(
            pick(
                Strategy::Failover,
                &candidates(&[1, 1, 1]),
                &all_down,
                &turn,
                ""
            ),
            None
        );
    }

    #[test]
    fn round_robin_and_weighted_share_among_the_healthy() {
        assert_eq!(
            picks(Strategy::RoundRobin, &[1, 1, 1], &all_up(), 6),
            [0, 1, 2, 0, 1, 2]
        );
        let middle_down = View {
            down: vec![1],
            ..all_up()
        };
        assert_eq!(
            picks(Strategy::RoundRobin, &[1, 1, 1], &middle_down, 4),
            [0, 2, 0, 2]
        );
        assert_eq!(
            picks(Strategy::Weighted, &[3, 1], &all_up(), 8),
            [0, 0, 0, 1, 0, 0, 0, 1]
        );
        assert_eq!(
            picks(Strategy::Weighted, &[3, 1, 2], &middle_down, 5),
            [0, 0, 0, 2, 2]
        );
    }

    #[test]
    fn least_requests_prefers_the_idlest() {
        let busy = View {
            down: vec![],
            in_flight: vec![5, 2, 9],
        };
        assert_eq!(picks(Strategy::LeastRequests, &[1, 1, 1], &busy, 1), [1]);
    }

    #[test]
    fn consistent_hash_keeps_objects_and_moves_only_a_lost_clusters() {
        let candidates = candidates(&[1, 1, 1]);
        let turn = AtomicUsize::new(0);
        let keys: Vec<String> = (0..300)
            .map(|i| format!("ns-{}/object-{i}", i % 7))
            .collect();
        let place = |view: &View| -> BTreeMap<&str, ClusterId> {
            keys.iter()
                .map(|key| {
                    let id = pick(Strategy::ConsistentHash, &candidates, view, &turn, key);
                    (key.as_str(), id.unwrap())
                })
                .collect()
        };
        let before = place(&all_up());
        assert_eq!(before, place(&all_up()), "the same key, the same cluster");
        for cluster in 0..3 {
            let share = before.values().filter(|id| **id == cluster).count();
            assert!(
                (60..=140).contains(&share),
                "cluster {cluster} got {share} of 300"
            );
        }
        let one_down = View {
            down: vec![2],
            ..all_up()
        };
        let after = place(&one_down);
        for (key, id) in &before {
            if *id != 2 {
                assert_eq!(after[key], *id, "{key} moved though its cluster is up");
            }
        }
        // Stable across runs, versions and machines: objects keep their cluster when MCA
        // restarts or is upgraded. (The value is FNV-1a then a 64-bit finalizer.)
        assert_eq!(rendezvous("default/web", "east"), 0x82fb_61f5_8992_9404);
    }

    #[test]
    fn strategy_names() {
        assert_eq!(Strategy::parse("roundRobin"), Some(Strategy::RoundRobin));
        assert_eq!(Strategy::parse("round-robin"), None);
    }
}
