//! Which cluster a request goes to.
//!
//! The configuration's routes are compiled once into a [`Router`]. Per request,
//! [`Router::decide`] walks them in order and takes the first whose every condition holds, or
//! the default route; [`Target::pick`] then chooses one of the route's clusters by its
//! strategy among those the [`ClusterView`] calls healthy. No sockets, no async, no clock,
//! and no allocation: decisions are table-tested and cheap.
//!
//! Conditions, all optional, all of which must hold:
//! - `namespaces`: exact names or `*` globs; never matches cluster-scoped requests or lists
//!   across all namespaces.
//! - `resources`: RBAC-style patterns ([`pattern`]); never matches non-resource requests.
//! - `verbs`: Kubernetes verbs as the API server derives them.
//! - `labelSelector`: for list, watch and deletecollection, the request's own `labelSelector`
//!   must imply it (every object the request can return is one the route selects); for a
//!   create, the object's labels must match it, which takes reading the body's `metadata`
//!   first ([`Decision::NeedsObject`]); requests for a named object follow the route's other
//!   conditions.
//! - `originalDestination`: the address the application dialled, when eBPF redirected it.

pub mod pattern;
pub mod selector;
mod strategy;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use serde::Deserialize;

use self::{
    pattern::{NamespacePattern, ResourcePattern, Verbs},
    selector::Selector,
};
use crate::reqinfo::RequestInfo;

pub use strategy::{Candidate, ClusterView, Strategy};

/// A cluster's index in the registry.
pub type ClusterId = usize;

/// A view of the clusters in which one more is unhealthy: where else a request could go.
#[derive(Debug, Clone, Copy)]
pub struct Excluding<'a, V>(pub &'a V, pub ClusterId);

impl<V: ClusterView> ClusterView for Excluding<'_, V> {
    fn healthy(&self, cluster: ClusterId) -> bool {
        cluster != self.1 && self.0.healthy(cluster)
    }

    fn in_flight(&self, cluster: ClusterId) -> usize {
        self.0.in_flight(cluster)
    }
}

/// The facts about a request that routes look at.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// What the request does.
    pub info: &'a RequestInfo,
    /// The `labelSelector` of a list, watch or deletecollection, if it has one.
    pub selector: Option<&'a Selector>,
    /// What a create's body says about its object.
    pub object: Object<'a>,
    /// What the client dialled, when eBPF redirected it.
    pub original_destination: Option<SocketAddr>,
}

/// What is known of the object a create sends.
#[derive(Debug, Clone, Copy)]
pub enum Object<'a> {
    /// The body was not read.
    NotRead,
    /// The body could not be read or parsed (too large, not JSON): label conditions do not
    /// hold.
    Unknown,
    /// Its metadata.
    Known(&'a ObjectMeta),
}

/// The part of a created object routing needs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ObjectMeta {
    /// `metadata.name` (absent with `generateName`).
    #[serde(default)]
    pub name: Option<String>,
    /// `metadata.labels`.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// A route's conditions.
#[derive(Debug, Clone, Default)]
pub struct Conditions {
    /// Namespace patterns; empty: any.
    pub namespaces: Vec<NamespacePattern>,
    /// Resource patterns; empty: any.
    pub resources: Vec<ResourcePattern>,
    /// Verbs; empty: any.
    pub verbs: Verbs,
    /// A label selector.
    pub selector: Option<Selector>,
    /// Original destinations; empty: any.
    pub destinations: Vec<SocketAddr>,
}

/// Whether a route's conditions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Check {
    Yes,
    No,
    /// Only the created object's labels can tell.
    NeedsObject,
}

impl Conditions {
    fn check(&self, request: &Request<'_>) -> Check {
        let info = request.info;
        let holds = (self.verbs.is_empty() || self.verbs.contains(info.verb()))
            && (self.namespaces.is_empty()
                || (!info.namespace().is_empty()
                    && self.namespaces.iter().any(|p| p.matches(info.namespace()))))
            && (self.resources.is_empty() || self.resources.iter().any(|p| p.matches(info)))
            && (self.destinations.is_empty()
                || request
                    .original_destination
                    .is_some_and(|d| self.destinations.contains(&d)));
        if !holds {
            return Check::No;
        }
        let Some(selector) = &self.selector else {
            return Check::Yes;
        };
        match info.verb() {
            "list" | "watch" | "deletecollection" => {
                let everything = Selector::default();
                yes(request.selector.unwrap_or(&everything).implies(selector))
            }
            // A create of the resource itself; `pods/exec` and friends carry no object.
            "create" if info.is_resource_request() && info.subresource().is_empty() => {
                match request.object {
                    Object::NotRead => Check::NeedsObject,
                    Object::Unknown => Check::No,
                    Object::Known(object) => {
                        yes(selector.matches(|key| object.labels.get(key).map(String::as_str)))
                    }
                }
            }
            _ => Check::Yes,
        }
    }
}

fn yes(holds: bool) -> Check {
    if holds { Check::Yes } else { Check::No }
}

/// Where a route sends requests.
#[derive(Debug)]
pub struct Target {
    candidates: Vec<Candidate>,
    strategy: Strategy,
    /// Requests so far, for the strategies that take turns.
    turn: AtomicUsize,
}

impl Target {
    /// A target choosing among `candidates` by `strategy`.
    pub fn new(candidates: Vec<Candidate>, strategy: Strategy) -> Self {
        Self {
            candidates,
            strategy,
            turn: AtomicUsize::new(0),
        }
    }

    /// The clusters, in the order configured.
    pub fn clusters(&self) -> impl Iterator<Item = ClusterId> + '_ {
        self.candidates.iter().map(|c| c.id)
    }

    /// For a fan-out target, its healthy clusters in order; `None` for other strategies.
    pub fn fan_out(&self, view: &impl ClusterView) -> Option<Vec<ClusterId>> {
        (self.strategy == Strategy::FanOut).then(|| {
            self.candidates
                .iter()
                .map(|c| c.id)
                .filter(|&id| view.healthy(id))
                .collect()
        })
    }

    /// Chooses a healthy cluster for the request (taking a turn, for the strategies that
    /// take turns); `None` when none is healthy.
    pub fn pick(&self, request: &Request<'_>, view: &impl ClusterView) -> Option<ClusterId> {
        self.choose(request, view, &self.turn)
    }

    /// Where the request would go if `first` were not there: the cluster a retry goes to.
    /// Takes no turn, so retries do not skew how the strategy spreads requests.
    pub fn fallback(
        &self,
        request: &Request<'_>,
        view: &impl ClusterView,
        first: ClusterId,
    ) -> Option<ClusterId> {
        let turn = AtomicUsize::new(self.turn.load(Ordering::Relaxed).wrapping_sub(1));
        self.choose(request, &Excluding(view, first), &turn)
    }

    fn choose(
        &self,
        request: &Request<'_>,
        view: &impl ClusterView,
        turn: &AtomicUsize,
    ) -> Option<ClusterId> {
        if self.strategy == Strategy::ConsistentHash {
            let info = request.info;
            let name = match request.object {
                Object::Known(ObjectMeta {
                    name: Some(name), ..
                }) => name.as_str(),
                _ => info.name(),
            };
            // On the stack: a key for every object without allocating.
            let mut key = KeyBuffer::default();
            key.push(info.namespace());
            key.push("/");
            key.push(name);
            return strategy::pick(self.strategy, &self.candidates, view, turn, key.as_str());
        }
        strategy::pick(self.strategy, &self.candidates, view, turn, "")
    }
}

/// A short string on the stack: namespace (≤ 63), `/`, name (≤ 253 bytes), truncated beyond.
struct KeyBuffer {
    bytes: [u8; 320],
    len: usize,
}

impl Default for KeyBuffer {
    fn default() -> Self {
        Self {
            bytes: [0; 320],
            len: 0,
        }
    }
}

impl KeyBuffer {
    fn push(&mut self, text: &str) {
        // Cut on a character boundary so the buffer stays UTF-8.
        let room = self.bytes.len() - self.len;
        let mut take = text.len().min(room);
        while !text.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&text.as_bytes()[..take]);
        self.len += take;
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("only whole characters are copied")
    }
}

/// A named route.
#[derive(Debug)]
pub struct Rule {
    /// Its name, for logs and errors.
    pub name: Arc<str>,
    /// What it takes.
    pub conditions: Conditions,
    /// Where it sends.
    pub target: Target,
}

/// The compiled routes.
#[derive(Debug)]
pub struct Router {
    rules: Vec<Rule>,
    default: Target,
    /// `default`, shared by the log lines of requests on the default route.
    default_name: Arc<str>,
}

/// The outcome of routing.
#[derive(Debug)]
pub enum Decision<'a> {
    /// The route taken and its target.
    Route {
        /// The route's name: the rule's, or `default`.
        name: &'a Arc<str>,
        /// Where to send.
        target: &'a Target,
    },
    /// Deciding needs the created object's metadata: read the body and decide again.
    NeedsObject,
}

impl Router {
    /// Routes compiled from the configuration: `rules` in order, then `default`.
    pub fn new(rules: Vec<Rule>, default: Target) -> Self {
        Self {
            rules,
            default,
            default_name: Arc::from("default"),
        }
    }

    /// A router sending everything to one cluster (MCA without a configuration file).
    pub fn single(cluster: Candidate) -> Self {
        Self::new(Vec::new(), Target::new(vec![cluster], Strategy::Single))
    }

    /// Whether any route has a label selector, so list selectors are worth parsing.
    pub fn uses_selectors(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.conditions.selector.is_some())
    }

    /// The routes, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Where requests no route takes go.
    pub fn default_target(&self) -> &Target {
        &self.default
    }

    /// The first route whose conditions hold, or the default route.
    pub fn decide(&self, request: &Request<'_>) -> Decision<'_> {
        let mut chosen = None;
        for rule in &self.rules {
            match rule.conditions.check(request) {
                Check::Yes => {
                    chosen = Some(rule);
                    break;
                }
                Check::No => {}
                Check::NeedsObject => return Decision::NeedsObject,
            }
        }
        let (name, target) = match chosen {
            Some(rule) => (&rule.name, &rule.target),
            None => (&self.default_name, &self.default),
        };
        // Consistent hashing of a create needs the object's name from its body.
        let info = request.info;
        let needs_name = target.strategy == Strategy::ConsistentHash
            && info.verb() == "create"
            && info.subresource().is_empty()
            && matches!(request.object, Object::NotRead);
        if needs_name {
            return Decision::NeedsObject;
        }
        Decision::Route { name, target }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AllHealthy;

    impl ClusterView for AllHealthy {
        fn healthy(&self, _: ClusterId) -> bool {
            true
        }
        fn in_flight(&self, _: ClusterId) -> usize {
            0
        }
    }

    /// `count` clusters of weight 1.
    fn candidates(count: usize) -> Vec<Candidate> {
        (0..count)
            .map(|id| Candidate {
                id,
                name: format!("c{id}"),
                weight: 1,
            })
            .collect()
    }

    fn target(id: ClusterId) -> Target {
        Target::new(
            vec![Candidate {
                id,
                name: format!("c{id}"),
                weight: 1,
            }],
            Strategy::Single,
        )
    }

    fn rule(name: &str, conditions: Conditions, to: ClusterId) -> Rule {
        Rule {
            name: name.into(),
            conditions,
            target: target(to),
        }
    }

    fn router() -> Router {
        let namespaces = |list: &[&str]| {
            list.iter()
                .map(|n| NamespacePattern::parse(n).unwrap())
                .collect()
        };
        let resources = |list: &[&str]| {
            list.iter()
                .map(|r| ResourcePattern::parse(r).unwrap())
                .collect()
        };
        Router::new(
            vec![
                rule(
                    "dialled",
                    Conditions {
                        destinations: vec!["198.51.100.7:443".parse().unwrap()],
                        ..Conditions::default()
                    },
                    5,
                ),
                rule(
                    "web-configmaps",
                    Conditions {
                        namespaces: namespaces(&["team-b", "b-*"]),
                        resources: resources(&["configmaps"]),
                        selector: Some(Selector::parse("tier=web").unwrap()),
                        ..Conditions::default()
                    },
                    1,
                ),
                rule(
                    "team-b-reads",
                    Conditions {
                        namespaces: namespaces(&["team-b", "b-*"]),
                        resources: resources(&["configmaps", "apps/deployments", "pods/log"]),
                        verbs: Verbs::parse(["get", "list", "watch"]).unwrap(),
                        ..Conditions::default()
                    },
                    2,
                ),
                rule(
                    "secrets",
                    Conditions {
                        resources: resources(&["secrets"]),
                        ..Conditions::default()
                    },
                    3,
                ),
            ],
            target(0),
        )
    }

    /// The route a request takes: (route name, cluster) or "needs object".
    fn route(
        router: &Router,
        method: &str,
        target: &str,
        object: Object<'_>,
        original: Option<&str>,
    ) -> String {
        let info = RequestInfo::parse(method, target);
        let query = target.split_once('?').map_or("", |(_, q)| q);
        let selector =
            crate::query::first(query, "labelSelector").map(|v| Selector::parse(&v).unwrap());
        let request = Request {
            info: &info,
            selector: selector.as_ref(),
            object,
            original_destination: original.map(|o| o.parse().unwrap()),
        };
        match router.decide(&request) {
            Decision::NeedsObject => "needs object".to_owned(),
            Decision::Route { name, target } => {
                format!("{name} -> {}", target.pick(&request, &AllHealthy).unwrap())
            }
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let router = router();
        let web = ObjectMeta {
            name: Some("c".into()),
            labels: [("tier".to_owned(), "web".to_owned())].into(),
        };
        let plain = ObjectMeta::default();
        let cm = "/api/v1/namespaces/team-b/configmaps";
        let cases = [
            // List selectors must imply the route's.
            (
                "GET",
                format!("{cm}?labelSelector=tier%3Dweb"),
                Object::NotRead,
                None,
                "web-configmaps -> 1",
            ),
            (
                "GET",
                format!("{cm}?labelSelector=tier%3Dweb%2Capp%3Dx&watch=1"),
                Object::NotRead,
                None,
                "web-configmaps -> 1",
            ),
            (
                "GET",
                format!("{cm}?labelSelector=tier+in+%28web%2Cdb%29"),
                Object::NotRead,
                None,
                "team-b-reads -> 2",
            ),
            (
                "GET",
                cm.to_owned(),
                Object::NotRead,
                None,
                "team-b-reads -> 2",
            ),
            // Creates are decided by the object's labels, once read.
            ("POST", cm.to_owned(), Object::NotRead, None, "needs object"),
            (
                "POST",
                cm.to_owned(),
                Object::Known(&web),
                None,
                "web-configmaps -> 1",
            ),
            (
                "POST",
                cm.to_owned(),
                Object::Known(&plain),
                None,
                "default -> 0",
            ),
            ("POST", cm.to_owned(), Object::Unknown, None, "default -> 0"),
            // By name: the selector is not consulted.
            (
                "GET",
                format!("{cm}/c"),
                Object::NotRead,
                None,
                "web-configmaps -> 1",
            ),
            (
                "DELETE",
                format!("{cm}/c"),
                Object::NotRead,
                None,
                "web-configmaps -> 1",
            ),
            // Globs, verbs, subresources, groups.
            (
                "GET",
                "/apis/apps/v1/namespaces/b-2/deployments".to_owned(),
                Object::NotRead,
                None,
                "team-b-reads -> 2",
            ),
            (
                "DELETE",
                "/apis/apps/v1/namespaces/b-2/deployments/d".to_owned(),
                Object::NotRead,
                None,
                "default -> 0",
            ),
            (
                "GET",
                "/api/v1/namespaces/team-b/pods/p/log".to_owned(),
                Object::NotRead,
                None,
                "team-b-reads -> 2",
            ),
            (
                "GET",
                "/api/v1/namespaces/team-b/pods/p".to_owned(),
                Object::NotRead,
                None,
                "default -> 0",
            ),
            (
                "GET",
                "/api/v1/namespaces/team-c/configmaps".to_owned(),
                Object::NotRead,
                None,
                "default -> 0",
            ),
            // All namespaces is not one namespace.
            (
                "GET",
                "/api/v1/configmaps".to_owned(),
                Object::NotRead,
                None,
                "default -> 0",
            ),
            (
                "GET",
                "/api/v1/secrets".to_owned(),
                Object::NotRead,
                None,
                "secrets -> 3",
            ),
            (
                "GET",
                "/version".to_owned(),
                Object::NotRead,
                None,
                "default -> 0",
            ),
            // Original destination comes first here.
            (
                "GET",
                "/version".to_owned(),
                Object::NotRead,
                Some("198.51.100.7:443"),
                "dialled -> 5",
            ),
            (
                "GET",
                "/version".to_owned(),
                Object::NotRead,
                Some("198.51.100.8:443"),
                "default -> 0",
            ),
        ];
        for (method, path, object, original, expected) in cases {
            assert_eq!(
                route(&router, method, &path, object, original),
                expected,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn consistent_hash_creates_need_the_name() {
        let mut router = router();
        router.default = Target::new(candidates(3), Strategy::ConsistentHash);
        let cm = "/api/v1/namespaces/team-x/configmaps";
        assert_eq!(
            route(&router, "POST", cm, Object::NotRead, None),
            "needs object"
        );
        let named = ObjectMeta {
            name: Some("settings".into()),
            ..ObjectMeta::default()
        };
        let created = route(&router, "POST", cm, Object::Known(&named), None);
        let fetched = route(
            &router,
            "GET",
            &format!("{cm}/settings"),
            Object::NotRead,
            None,
        );
        let patched = route(
            &router,
            "PATCH",
            &format!("{cm}/settings"),
            Object::NotRead,
            None,
        );
        assert_eq!(created, fetched);
        assert_eq!(created, patched);
    }

    #[test]
    fn a_fallback_takes_no_turn() {
        let target = Target::new(candidates(3), Strategy::RoundRobin);
        let info = RequestInfo::parse("GET", "/api/v1/namespaces/a/pods");
        let request = Request {
            info: &info,
            selector: None,
            object: Object::NotRead,
            original_destination: None,
        };
        let mut picks = Vec::new();
        for _ in 0..3 {
            let first = target.pick(&request, &AllHealthy).unwrap();
            let fallback = target.fallback(&request, &AllHealthy, first).unwrap();
            assert_ne!(first, fallback);
            picks.push(first);
        }
        assert_eq!(picks, [0, 1, 2]);
    }

    #[test]
    fn key_buffer_truncates_on_character_boundaries() {
        let mut key = KeyBuffer::default();
        key.push(&"é".repeat(200));
        assert_eq!(key.as_str().chars().count(), 160);
    }
}
