//! Label values with a bound: a metric series per value an application can make up would let
//! one misbehaving client grow MCA's memory and every scrape without limit. Verbs come from a
//! fixed list and status codes from the registered ones (a `services/.../proxy` request lets
//! the app's own server answer with any code); resources are kept as the client named them
//! until [`RESOURCES`] distinct ones have been seen, and whole label combinations until
//! [`SERIES`], after which new ones collapse into [`OTHER`].

use std::{collections::HashSet, sync::RwLock};

use crate::reqinfo::RequestInfo;

/// The value that stands for every value past a bound.
pub const OTHER: &str = "other";

/// How many distinct (group, resource, subresource) triples get series of their own. A
/// cluster with every built-in API and a few hundred CRDs stays under it.
pub const RESOURCES: usize = 1000;

/// How many distinct label combinations a request series family may have; each of its
/// labels is bounded, but their product is not (1,000 resources × 13 verbs × 60 codes).
pub const SERIES: usize = 10_000;

/// The verbs of non-resource requests (their lower-cased methods) that resource requests'
/// verbs do not already cover.
const METHODS: [&str; 4] = ["head", "post", "put", "options"];

/// A request's verb as a label value: itself when the API server knows it, else [`OTHER`].
pub fn verb(info: &RequestInfo) -> &str {
    crate::route::pattern::VERBS
        .iter()
        .chain(&METHODS)
        .find(|known| **known == info.verb())
        .copied()
        .unwrap_or(OTHER)
}

/// A response's status code as a label value: itself when registered (RFC 9110 and the
/// IANA registry as `http` knows them), else [`OTHER`].
pub fn code(code: u16) -> String {
    let registered = http::StatusCode::from_u16(code)
        .ok()
        .and_then(|code| code.canonical_reason())
        .is_some();
    if registered {
        code.to_string()
    } else {
        OTHER.to_owned()
    }
}

/// Keys seen so far, up to a bound: whether a key is one of the first `bound` seen.
#[derive(Debug)]
pub struct Seen<K> {
    bound: usize,
    keys: RwLock<HashSet<K>>,
}

impl<K: std::hash::Hash + Eq> Seen<K> {
    /// Admits the first `bound` distinct keys.
    pub fn new(bound: usize) -> Self {
        Self {
            bound,
            keys: RwLock::default(),
        }
    }

    /// Whether `key` is one of the first `bound` distinct keys (admitting it if there is
    /// room).
    pub fn admit(&self, key: K) -> bool {
        if self
            .keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&key)
        {
            return true;
        }
        let mut keys = self.keys.write().unwrap_or_else(|e| e.into_inner());
        if keys.contains(&key) {
            return true;
        }
        keys.len() < self.bound && keys.insert(key)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// The resources seen so far, up to [`RESOURCES`], by a hash of the triple: every request
/// asks, and a key of its own would be an allocation each time.
#[derive(Debug)]
pub struct Resources(Seen<u64>);

impl Default for Resources {
    fn default() -> Self {
        Self(Seen::new(RESOURCES))
    }
}

/// A request's group, resource and subresource as label values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource<'a> {
    /// The API group, empty for the core group and for non-resource requests.
    pub group: &'a str,
    /// The resource, empty for non-resource requests.
    pub resource: &'a str,
    /// The subresource, often empty.
    pub subresource: &'a str,
}

impl Resources {
    /// The request's labels: as named while the triple is one of the first [`RESOURCES`]
    /// seen and spelled as Kubernetes names are, else [`OTHER`] for all three.
    pub fn labels<'a>(&self, info: &'a RequestInfo) -> Resource<'a> {
        let named = Resource {
            group: info.api_group(),
            resource: info.resource(),
            subresource: info.subresource(),
        };
        let other = Resource {
            group: OTHER,
            resource: OTHER,
            subresource: OTHER,
        };
        if named.resource.is_empty() {
            return named;
        }
        if ![named.group, named.resource, named.subresource]
            .iter()
            .all(|value| is_name(value))
        {
            return other;
        }
        if self
            .0
            .admit(hash(&(named.group, named.resource, named.subresource)))
        {
            named
        } else {
            other
        }
    }
}

/// A label combination's key in a [`Seen`] set.
pub fn hash(labels: &impl std::hash::Hash) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault, DefaultHasher};
    BuildHasherDefault::<DefaultHasher>::default().hash_one(labels)
}

/// Whether `value` is spelled like a Kubernetes group or resource name (a DNS subdomain:
/// lower-case letters, digits, `-` and `.`, at most 253 characters).
fn is_name(value: &str) -> bool {
    value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(method: &str, target: &str) -> RequestInfo {
        RequestInfo::parse(method, target)
    }

    #[test]
    fn verbs_outside_the_api_servers_collapse() {
        assert_eq!(verb(&info("GET", "/api/v1/namespaces/a/pods")), "list");
        assert_eq!(verb(&info("GET", "/version")), "get");
        assert_eq!(verb(&info("PROPFIND", "/version")), OTHER);
    }

    #[test]
    fn resources_are_named_until_the_bound_then_other() {
        let resources = Resources::default();
        let pods = info("GET", "/api/v1/namespaces/a/pods/p/log");
        assert_eq!(
            resources.labels(&pods),
            Resource {
                group: "",
                resource: "pods",
                subresource: "log"
            }
        );
        for i in 0..RESOURCES {
            resources.labels(&info("GET", &format!("/apis/example.com/v1/crd{i}")));
        }
        let late = info("GET", "/apis/example.com/v1/latecomers");
        assert_eq!(resources.labels(&late).resource, OTHER);
        // Those seen before the bound keep their names.
        assert_eq!(resources.labels(&pods).resource, "pods");
        assert_eq!(resources.0.len(), RESOURCES);
        // Non-resource requests have no resource labels to bound.
        assert_eq!(resources.labels(&info("GET", "/healthz")).resource, "");
    }

    #[test]
    fn names_no_kubernetes_object_could_have_collapse() {
        let resources = Resources::default();
        let odd = info("GET", "/apis/Example.com/v1/Things");
        assert_eq!(resources.labels(&odd).group, OTHER);
        let odd = info("GET", "/api/v1/namespaces/a/pods/p/Status");
        assert_eq!(resources.labels(&odd).subresource, OTHER);
        assert_eq!(resources.0.len(), 0);
    }

    #[test]
    fn unregistered_status_codes_collapse() {
        assert_eq!(code(200), "200");
        assert_eq!(code(429), "429");
        assert_eq!(code(599), OTHER);
        assert_eq!(code(999), OTHER);
        assert_eq!(code(42), OTHER);
    }

    #[test]
    fn keys_past_the_bound_are_refused_and_earlier_ones_stay() {
        let seen = Seen::new(2);
        assert!(seen.admit('a') && seen.admit('b') && seen.admit('a'));
        assert!(!seen.admit('c'));
        assert!(seen.admit('b'));
        assert_eq!(seen.len(), 2);
    }
}
