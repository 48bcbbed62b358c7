//! Which LIST requests the list cache may answer, and which objects each one selects.
//!
//! The API server answers a LIST with `resourceVersion=0` from its watch cache: any
//! resourceVersion is acceptable, however old, and `limit` is ignored. A copy of the objects
//! kept current by a watch is therefore a faithful answer, as long as the request asks for
//! nothing that copy cannot give: a JSON list (not a Table, not protobuf only), filtered by
//! namespace, label selector and the field selectors every resource supports
//! (`metadata.name`, `metadata.namespace`). Anything else goes to the API server.

use std::{fmt, str::FromStr};

use crate::route::selector::Selector;

/// A resource whose objects are kept: `[group/]version/resource`, e.g. `v1/configmaps` or
/// `apps/v1/deployments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    group: String,
    version: String,
    resource: String,
}

impl Resource {
    /// The path of the collection across namespaces, e.g. `/apis/apps/v1/deployments`.
    pub fn collection(&self) -> String {
        format!("{}/{}", self.prefix(), self.resource)
    }

    /// `/api/v1` or `/apis/{group}/{version}`.
    fn prefix(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.group.is_empty() {
            write!(f, "{}/", self.group)?;
        }
        write!(f, "{}/{}", self.version, self.resource)
    }
}

impl FromStr for Resource {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = text.split('/').collect();
        let (group, version, resource) = match parts.as_slice() {
            [version, resource] => (None, *version, *resource),
            [group, version, resource] => (Some(*group), *version, *resource),
            _ => {
                return Err(format!(
                    "{text:?}: expected [group/]version/resource, e.g. v1/configmaps or \
                     apps/v1/deployments"
                ));
            }
        };
        let segment = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        };
        if !segment(version) || !segment(resource) || !group.is_none_or(segment) {
            return Err(format!(
                "{text:?}: group, version and resource are lower-case DNS-style names"
            ));
        }
        Ok(Self {
            group: group.unwrap_or_default().to_owned(),
            version: version.to_owned(),
            resource: resource.to_owned(),
        })
    }
}

/// A LIST the cache can answer: which resource (an index into the configured ones) and
/// which of its objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Index of the resource among those configured.
    pub resource: usize,
    /// `Some` for a list within one namespace.
    pub namespace: Option<String>,
    labels: Selector,
    fields: Vec<Field>,
}

/// One `fieldSelector` requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Field {
    on: Meta,
    value: String,
    equal: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Meta {
    Name,
    Namespace,
}

impl Query {
    /// The query `GET path?query` (with `Accept: accept`) asks of one of `resources`, when
    /// the cache can answer it.
    pub fn parse(
        resources: &[Resource],
        path: &str,
        query: &str,
        accept: Option<&str>,
    ) -> Option<Self> {
        if !accept.is_none_or(takes_json) {
            return None;
        }
        let (resource, namespace) = resources
            .iter()
            .enumerate()
            .find_map(|(index, resource)| Some((index, collection(resource, path)?)))?;
        let mut parsed = Self {
            resource,
            namespace: namespace.map(str::to_owned),
            labels: Selector::default(),
            fields: Vec::new(),
        };
        let mut seen = Vec::new();
        for (key, value) in crate::query::pairs(query) {
            if seen.contains(&key) {
                // The API server reads the first of repeated parameters; rarely meant.
                return None;
            }
            match &*key {
                "resourceVersion" if value == "0" => {}
                "resourceVersionMatch" if value.is_empty() || value == "NotOlderThan" => {}
                "labelSelector" => parsed.labels = Selector::parse(&value).ok()?,
                "fieldSelector" => parsed.fields = fields(&value)?,
                // Ignored by the API server for lists from its watch cache, as here.
                "limit" | "timeout" | "timeoutSeconds" | "allowWatchBookmarks" => {}
                _ => return None,
            }
            seen.push(key);
        }
        seen.iter()
            .any(|key| key == "resourceVersion")
            .then_some(parsed)
    }

    /// Whether the object `namespace/name` with labels (`label(key)` gives a value) is one
    /// this query selects.
    pub fn matches<'a>(
        &self,
        namespace: &str,
        name: &str,
        label: impl Fn(&str) -> Option<&'a str>,
    ) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
            && self.fields.iter().all(|field| {
                let actual = match field.on {
                    Meta::Name => name,
                    Meta::Namespace => namespace,
                };
                (actual == field.value) == field.equal
            })
            && self.labels.matches(label)
    }
}

/// Whether an `Accept` header admits a plain JSON answer: some media range is JSON or a
/// wildcard, and none asks for a transformed object (`as=Table`, `as=PartialObjectMetadata`).
fn takes_json(accept: &str) -> bool {
    let mut json = false;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let media = params.next().unwrap_or_default().trim();
        if params.any(|p| p.trim().to_ascii_lowercase().starts_with("as=")) {
            return false;
        }
        json |= matches!(media, "application/json" | "application/*" | "*/*");
    }
    json
}

/// Whether `path` is `resource`'s collection, across namespaces (`Some(None)`) or within one.
fn collection<'p>(resource: &Resource, path: &'p str) -> Option<Option<&'p str>> {
    let rest = path.strip_prefix(resource.prefix().as_str())?;
    if rest.strip_prefix('/') == Some(resource.resource.as_str()) {
        return Some(None);
    }
    let rest = rest.strip_prefix("/namespaces/")?;
    let (namespace, tail) = rest.split_once('/')?;
    let plain = !namespace.is_empty() && !namespace.contains('%');
    (plain && tail == resource.resource).then_some(Some(namespace))
}

/// Parses a field selector of `metadata.name` and `metadata.namespace` requirements
/// (`=`, `==`, `!=`, joined by commas); `None` for anything else, which the API server
/// judges itself.
fn fields(text: &str) -> Option<Vec<Field>> {
    if text.contains('\\') {
        return None;
    }
    text.split(',')
        .filter(|term| !term.trim().is_empty())
        .map(|term| {
            let (key, value, equal) = if let Some((key, value)) = term.split_once("!=") {
                (key, value, false)
            } else if let Some((key, value)) = term.split_once("==") {
                (key, value, true)
            } else {
                let (key, value) = term.split_once('=')?;
                (key, value, true)
            };
            let on = match key.trim() {
                "metadata.name" => Meta::Name,
                "metadata.namespace" => Meta::Namespace,
                _ => return None,
            };
            Some(Field {
                on,
                value: value.trim().to_owned(),
                equal,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resources() -> Vec<Resource> {
        vec![
            "v1/configmaps".parse().unwrap(),
            "apps/v1/deployments".parse().unwrap(),
        ]
    }

    fn parse(path: &str, query: &str) -> Option<Query> {
        Query::parse(&resources(), path, query, None)
    }

    #[test]
    fn resources_parse_with_and_without_a_group() {
        let core: Resource = "v1/configmaps".parse().unwrap();
        assert_eq!(core.collection(), "/api/v1/configmaps");
        assert_eq!(core.to_string(), "v1/configmaps");
        let apps: Resource = "apps/v1/deployments".parse().unwrap();
        assert_eq!(apps.collection(), "/apis/apps/v1/deployments");
        assert_eq!(apps.to_string(), "apps/v1/deployments");
        for bad in [
            "configmaps",
            "a/b/c/d",
            "v1/",
            "/v1/pods",
            "v1/Pods",
            "v1/pods?x",
        ] {
            assert!(bad.parse::<Resource>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_at_resource_version_zero_are_answered() {
        let all = parse("/api/v1/configmaps", "resourceVersion=0").unwrap();
        assert_eq!((all.resource, all.namespace), (0, None));
        let one = parse(
            "/apis/apps/v1/namespaces/prod/deployments",
            "resourceVersion=0&limit=500&resourceVersionMatch=NotOlderThan&timeout=30s",
        )
        .unwrap();
        assert_eq!((one.resource, one.namespace.as_deref()), (1, Some("prod")));
    }

    #[test]
    fn anything_the_copy_cannot_answer_goes_to_the_api_server() {
        for (path, query) in [
            // A consistent read, or an exact version: only the API server has them.
            ("/api/v1/configmaps", ""),
            ("/api/v1/configmaps", "resourceVersion=5"),
            (
                "/api/v1/configmaps",
                "resourceVersion=0&resourceVersionMatch=Exact",
            ),
            ("/api/v1/configmaps", "resourceVersion=0&resourceVersion=5"),
            ("/api/v1/configmaps", "resourceVersion=0&watch=1"),
            ("/api/v1/configmaps", "resourceVersion=0&continue=abc"),
            (
                "/api/v1/configmaps",
                "resourceVersion=0&fieldSelector=data.x%3Dy",
            ),
            (
                "/api/v1/configmaps",
                "resourceVersion=0&labelSelector=a%20in",
            ),
            // Not a configured collection.
            ("/api/v1/secrets", "resourceVersion=0"),
            ("/api/v1/configmaps/x", "resourceVersion=0"),
            ("/api/v1/namespaces/a/configmaps/x", "resourceVersion=0"),
            ("/api/v1/namespaces//configmaps", "resourceVersion=0"),
            ("/api/v1/namespaces/a%2Fb/configmaps", "resourceVersion=0"),
            ("/apis/apps/v2/deployments", "resourceVersion=0"),
        ] {
            assert_eq!(parse(path, query), None, "{path}?{query}");
        }
    }

    #[test]
    fn only_json_answers_are_given() {
        let resources = resources();
        let ask = |accept| {
            Query::parse(
                &resources,
                "/api/v1/configmaps",
                "resourceVersion=0",
                accept,
            )
            .is_some()
        };
        assert!(ask(None));
        assert!(ask(Some("application/json")));
        assert!(ask(Some("application/vnd.kubernetes.protobuf, */*")));
        assert!(!ask(Some("application/vnd.kubernetes.protobuf")));
        assert!(!ask(Some(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        )));
        assert!(!ask(Some(
            "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io"
        )));
    }

    #[test]
    fn selectors_choose_objects() {
        let query = parse(
            "/api/v1/configmaps",
            "resourceVersion=0&labelSelector=app%3Dweb&fieldSelector=metadata.namespace%3Dprod,metadata.name!%3Dold",
        )
        .unwrap();
        let web = |key: &str| (key == "app").then_some("web");
        let none = |_: &str| None;
        assert!(query.matches("prod", "new", web));
        assert!(!query.matches("prod", "old", web));
        assert!(!query.matches("dev", "new", web));
        assert!(!query.matches("prod", "new", none));

        let namespaced = parse("/api/v1/namespaces/dev/configmaps", "resourceVersion=0").unwrap();
        assert!(namespaced.matches("dev", "x", none));
        assert!(!namespaced.matches("prod", "x", none));
    }
}
