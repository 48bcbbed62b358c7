//! A route's conditions and target, compiled for the [`Router`](crate::route::Router).

use std::net::SocketAddr;

use super::{ClusterSpec, check::Checker, file};
use crate::route::{
    Candidate, Conditions, Strategy, Target,
    pattern::{NamespacePattern, ResourcePattern, Verbs},
    selector::Selector,
};

impl Checker<'_> {
    pub(super) fn conditions(&mut self, matches: file::Match, line: u64, at: &str) -> Conditions {
        let mut conditions = Conditions::default();
        for namespace in &matches.namespaces {
            match NamespacePattern::parse(namespace) {
                Ok(pattern) => conditions.namespaces.push(pattern),
                Err(why) => self.problem(line, at, format!("match.namespaces: {why}")),
            }
        }
        for resource in &matches.resources {
            match ResourcePattern::parse(resource) {
                Ok(pattern) => conditions.resources.push(pattern),
                Err(why) => self.problem(line, at, format!("match.resources: {why}")),
            }
        }
        match Verbs::parse(matches.verbs.iter().map(String::as_str)) {
            Ok(verbs) => conditions.verbs = verbs,
            Err(why) => self.problem(line, at, format!("match.verbs: {why}")),
        }
        if let Some(text) = &matches.label_selector {
            match Selector::parse(text) {
                Ok(selector) if selector.is_empty() => {}
                Ok(selector) => conditions.selector = Some(selector),
                Err(why) => self.problem(line, at, format!("match.labelSelector: {why}")),
            }
        }
        for destination in &matches.original_destination {
            match destination.parse::<SocketAddr>() {
                Ok(addr) => conditions.destinations.push(addr),
                Err(_) => self.problem(
                    line,
                    at,
                    format!("match.originalDestination: {destination:?} is not ip:port"),
                ),
            }
        }
        conditions
    }

    /// A route's target: `candidates` are the clusters (by [`Candidate::id`], the index in
    /// `clusters`, whose labels a `clusterSelector` selects by).
    pub(super) fn target(
        &mut self,
        target: file::Target,
        (candidates, clusters): (&[Candidate], &[ClusterSpec]),
        line: u64,
        at: &str,
    ) -> Option<Target> {
        let problems = self.problems.len();
        let mut chosen: Vec<Candidate> = Vec::new();
        for name in &target.clusters {
            match candidates.iter().find(|c| c.name == *name) {
                Some(_) if chosen.iter().any(|c| c.name == *name) => {
                    self.problem(line, at, format!("clusters: {name:?} is listed twice"));
                }
                Some(candidate) => chosen.push(candidate.clone()),
                None => self.problem(line, at, format!("clusters: no cluster named {name:?}")),
            }
        }
        if let Some(text) = &target.cluster_selector {
            match Selector::parse(text) {
                Ok(selector) if selector.is_empty() => {
                    self.problem(line, at, "clusterSelector: select by at least one label");
                }
                Ok(selector) => {
                    let named = chosen.len();
                    for candidate in candidates {
                        let labels = &clusters[candidate.id].labels;
                        if selector.matches(|key| labels.get(key).map(String::as_str))
                            && !chosen.iter().any(|c| c.id == candidate.id)
                        {
                            chosen.push(candidate.clone());
                        }
                    }
                    if chosen.len() == named {
                        self.problem(
                            line,
                            at,
                            format!("clusterSelector {text:?} selects no other cluster"),
                        );
                    }
                }
                Err(why) => self.problem(line, at, format!("clusterSelector: {why}")),
            }
        } else if target.clusters.is_empty() {
            self.problem(
                line,
                at,
                "clusters: name at least one cluster, or select them with clusterSelector",
            );
        }
        let strategy = match target.strategy.as_deref() {
            None | Some("single") => {
                if target.clusters.len() > 1 || chosen.len() > 1 {
                    self.problem(
                        line,
                        at,
                        "several clusters need a strategy: failover, roundRobin, weighted, \
                         leastRequests, consistentHash or fanOut",
                    );
                }
                Strategy::Single
            }
            Some(name) => Strategy::parse(name).unwrap_or_else(|| {
                let known: Vec<&str> = Strategy::NAMES.iter().map(|(name, _)| *name).collect();
                self.problem(
                    line,
                    at,
                    format!("strategy {name:?} is not one of: {}", known.join(", ")),
                );
                Strategy::Single
            }),
        };
        (self.problems.len() == problems).then(|| Target::new(chosen, strategy))
    }
}
