//! Checking a parsed file as a whole: every problem is collected with its line, so one run
//! of `mca check-config` reports them all.

use std::{collections::BTreeSet, path::Path};

use serde_saphyr::Spanned;

use super::{ClusterSpec, Config, HealthSpec, LOCAL, Problem, Schema, file};
use crate::route::{Candidate, Router, Rule, Strategy, Target};

/// Collects problems while turning the file into a [`Config`].
pub(super) struct Checker<'a> {
    pub(super) base: &'a Path,
    pub(super) schema: Schema,
    pub(super) problems: Vec<Problem>,
}

impl Checker<'_> {
    pub(super) fn problem(&mut self, line: u64, at: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            line,
            at: at.to_owned(),
            message: message.into(),
        });
    }

    pub(super) fn config(&mut self, file: file::File) -> Config {
        let mut clusters = Config::local_only().clusters;
        clusters[0].health = Some(HealthSpec::default());
        let mut weights = vec![1];
        for (index, entry) in file.clusters.into_iter().enumerate() {
            let line = entry.referenced.line();
            let at = format!("clusters[{index}] ({})", entry.value.name);
            if let Some((spec, weight)) = self.cluster(entry.value, line, &at) {
                if clusters.iter().any(|c| c.name == spec.name) {
                    let message = if spec.name == LOCAL {
                        "\"local\" is MCA's own cluster (in-cluster or --kubeconfig); choose \
                         another name"
                            .to_owned()
                    } else {
                        format!("a cluster named {:?} is already defined", spec.name)
                    };
                    self.problem(line, &at, message);
                    continue;
                }
                clusters.push(spec);
                weights.push(weight);
            }
        }
        let candidates: Vec<Candidate> = clusters
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(id, (cluster, weight))| Candidate {
                id,
                name: cluster.name.clone(),
                weight: *weight,
            })
            .collect();

        let mut names = BTreeSet::new();
        let mut rules = Vec::new();
        for (index, entry) in file.routes.into_iter().enumerate() {
            let line = entry.referenced.line();
            let route = entry.value;
            let at = format!("routes[{index}] ({})", route.name);
            if route.name.is_empty() {
                self.problem(line, &at, "a route needs a name");
            } else if !names.insert(route.name.clone()) {
                self.problem(line, &at, "another route has this name");
            }
            let conditions = self.conditions(route.matches, line, &at);
            let target = self.target(
                route.to,
                (&candidates, &clusters),
                line,
                &format!("{at}: to"),
            );
            if let Some(target) = target {
                rules.push(Rule {
                    name: route.name.into(),
                    conditions,
                    target,
                });
            }
        }
        let default = match file.default_route {
            Some(Spanned {
                value, referenced, ..
            }) => self.target(
                value,
                (&candidates, &clusters),
                referenced.line(),
                "defaultRoute",
            ),
            None => None,
        };
        let default =
            default.unwrap_or_else(|| Target::new(vec![candidates[0].clone()], Strategy::Single));
        let merged_discovery = match file.discovery {
            None => false,
            Some(Spanned {
                value, referenced, ..
            }) => match value.as_str() {
                "defaultRoute" => false,
                "merged" => true,
                other => {
                    self.problem(
                        referenced.line(),
                        "discovery",
                        format!("{other:?} is neither defaultRoute nor merged"),
                    );
                    false
                }
            },
        };
        Config {
            clusters,
            router: Router::new(rules, default),
            merged_discovery,
        }
    }

    /// A cluster entry and its weight.
    fn cluster(
        &mut self,
        cluster: file::Cluster,
        line: u64,
        at: &str,
    ) -> Option<(ClusterSpec, u32)> {
        let problems = self.problems.len();
        if let Err(why) = validate_dns_label(&cluster.name) {
            self.problem(line, at, format!("name: {why}"));
        }
        let weight = cluster.weight.unwrap_or(1);
        if weight == 0 {
            self.problem(line, at, "weight: must be at least 1");
        }
        let source = self.source(&cluster, line, at);
        let mut health = self.health(cluster.health, line, at);
        match cluster.unhealthy {
            Some(why) if why.trim().is_empty() => {
                self.problem(line, at, "unhealthy: say why the cluster is down");
            }
            why => health.reported_down = why,
        }
        if self.problems.len() > problems {
            return None;
        }
        let spec = ClusterSpec {
            name: cluster.name,
            source: Some(source?),
            labels: cluster.labels,
            health: Some(health),
        };
        Some((spec, weight))
    }

    fn health(&mut self, health: Option<file::Health>, line: u64, at: &str) -> HealthSpec {
        let mut spec = HealthSpec::default();
        let Some(health) = health else {
            return spec;
        };
        if let Some(path) = health.path {
            if !path.starts_with('/') {
                self.problem(
                    line,
                    at,
                    format!("health.path {path:?} must start with '/'"),
                );
            }
            spec.path = path;
        }
        for (name, text, field) in [
            ("interval", health.interval, &mut spec.interval),
            ("timeout", health.timeout, &mut spec.timeout),
        ] {
            if let Some(text) = text {
                match crate::duration::parse(&text) {
                    Ok(duration) if !duration.is_zero() => *field = duration,
                    Ok(_) => self.problem(line, at, format!("health.{name} must not be zero")),
                    Err(why) => self.problem(line, at, format!("health.{name}: {why}")),
                }
            }
        }
        for (name, value, field) in [
            (
                "unhealthyAfter",
                health.unhealthy_after,
                &mut spec.unhealthy_after,
            ),
            (
                "healthyAfter",
                health.healthy_after,
                &mut spec.healthy_after,
            ),
        ] {
            match value {
                Some(0) => self.problem(line, at, format!("health.{name} must be at least 1")),
                Some(value) => *field = value,
                None => {}
            }
        }
        spec
    }
}

/// A DNS-1123 label: what Kubernetes allows for a name used in a URL path.
fn validate_dns_label(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a DNS label (lowercase letters, digits and '-', at most 63)"
        ))
    }
}
