//! A route's conditions on namespace, resource and verb, parsed once and matched without
//! allocating.
//!
//! Resource patterns read `[group/]resource[/subresource]` as RBAC rules do: `pods` is the
//! resource itself, `pods/log` one subresource, `pods/*` any subresource of pods,
//! `*/deployments` deployments of any group, `*/*/scale` the scale subresource of anything,
//! `*` alone everything. Two segments are `group/resource` when the first names a group (it
//! contains a dot, is one of the dotless built-in groups, or is `*`), and
//! `resource/subresource` of the core group otherwise.

use crate::reqinfo::RequestInfo;

/// The built-in API groups whose names have no dot.
const DOTLESS_GROUPS: [&str; 5] = ["apps", "autoscaling", "batch", "extensions", "policy"];

/// A namespace, exact or with `*` for any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern(String);

impl NamespacePattern {
    /// Parses a pattern: namespace characters (lowercase letters, digits, `-`) and `*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let valid = !text.is_empty()
            && text.len() <= 63
            && text
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '*');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(format!(
                "{text:?} is not a namespace pattern (lowercase letters, digits, '-', and '*' \
                 for any run of characters)"
            ))
        }
    }

    /// Whether `namespace` matches.
    pub fn matches(&self, namespace: &str) -> bool {
        glob(self.0.as_bytes(), namespace.as_bytes())
    }
}

/// `*` matches any run of bytes; everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    // The classic greedy algorithm with one backtrack point: linear for patterns like ours.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((star_p, star_t)) = star {
            p = star_p + 1;
            t = star_t + 1;
            star = Some((star_p, star_t + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// `[group/]resource[/subresource]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePattern {
    group: Part,
    resource: Part,
    subresource: Subresource,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Any,
    Exactly(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Subresource {
    /// The resource itself.
    None,
    Any,
    Exactly(String),
}

impl Part {
    fn new(text: &str) -> Self {
        if text == "*" {
            Self::Any
        } else {
            Self::Exactly(text.to_owned())
        }
    }

    fn matches(&self, text: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exactly(exactly) => exactly == text,
        }
    }
}

impl ResourcePattern {
    /// Parses a pattern (see the module documentation).
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<&str> = text.split('/').collect();
        let valid_segment = |s: &&str| {
            *s == "*"
                || (!s.is_empty()
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')
                    }))
        };
        if !segments.iter().all(valid_segment) || segments.len() > 3 {
            return Err(format!(
                "{text:?} is not a resource pattern: [group/]resource[/subresource], lowercase, \
                 '*' for any"
            ));
        }
        let names_group = |s: &str| s == "*" || s.contains('.') || DOTLESS_GROUPS.contains(&s);
        let subresource = |s: &str| {
            if s == "*" {
                Subresource::Any
            } else {
                Subresource::Exactly(s.to_owned())
            }
        };
        let core = Part::Exactly(String::new());
        Ok(match segments.as_slice() {
            ["*"] => Self {
                group: Part::Any,
                resource: Part::Any,
                subresource: Subresource::Any,
            },
            [resource] => Self {
                group: core,
                resource: Part::new(resource),
                subresource: Subresource::None,
            },
            [group, resource] if names_group(group) => Self {
                group: Part::new(group),
                resource: Part::new(resource),
                subresource: Subresource::None,
            },
            [resource, sub] => Self {
                group: core,
                resource: Part::new(resource),
                subresource: subresource(sub),
            },
            [group, resource, sub] => Self {
                group: Part::new(group),
                resource: Part::new(resource),
                subresource: subresource(sub),
            },
            _ => unreachable!("one to three segments"),
        })
    }

    /// Whether a resource request matches.
    pub fn matches(&self, info: &RequestInfo) -> bool {
        info.is_resource_request()
            && self.group.matches(info.api_group())
            && self.resource.matches(info.resource())
            && match &self.subresource {
                Subresource::None => info.subresource().is_empty(),
                Subresource::Any => true,
                Subresource::Exactly(sub) => *sub == info.subresource(),
            }
    }
}

/// A set of Kubernetes verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Verbs(u16);

/// The verbs the API server's request-info parser gives resource requests, in bit order.
pub(crate) const VERBS: [&str; 9] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
    "proxy",
];

impl Verbs {
    /// Parses verb names; `*` is all of them.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0;
        for name in names {
            bits |= match name {
                "*" => u16::MAX,
                _ => match VERBS.iter().position(|verb| *verb == name) {
                    Some(bit) => 1 << bit,
                    None => {
                        return Err(format!("{name:?} is not a verb: {} or *", VERBS.join(", ")));
                    }
                },
            };
        }
        Ok(Self(bits))
    }

    /// Whether no verb is in the set (a route without a verb condition).
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether `verb` is in the set.
    pub fn contains(self, verb: &str) -> bool {
        VERBS
            .iter()
            .position(|known| *known == verb)
            .is_some_and(|bit| self.0 & (1 << bit) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_globs() {
        let cases = [
            ("team-b", "team-b", true),
            ("team-b", "team-bb", false),
            ("b-*", "b-1", true),
            ("b-*", "b-", true),
            ("b-*", "a-b-1", false),
            ("*-prod", "shop-prod", true),
            ("*-prod", "shop-prod-2", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("*", "", true),
            ("*", "anything", true),
            ("team", "", false),
        ];
        for (pattern, namespace, matches) in cases {
            let pattern = NamespacePattern::parse(pattern).unwrap();
            assert_eq!(
                pattern.matches(namespace),
                matches,
                "{pattern:?} {namespace:?}"
            );
        }
        for bad in ["", "Team", "team_b", "a/b", &"x".repeat(64)] {
            assert!(NamespacePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resource_patterns_read_group_resource_and_subresource() {
        let request = |method: &str, path: &str| RequestInfo::parse(method, path);
        let pods = request("GET", "/api/v1/namespaces/a/pods");
        let log = request("GET", "/api/v1/namespaces/a/pods/p/log");
        let deployments = request("GET", "/apis/apps/v1/namespaces/a/deployments");
        let scale = request("GET", "/apis/apps/v1/namespaces/a/deployments/d/scale");
        let certificates = request("GET", "/apis/cert-manager.io/v1/certificates");
        let version = request("GET", "/version");
        // (pattern, [pods, log, deployments, scale, certificates, version])
        let cases = [
            ("pods", [true, false, false, false, false, false]),
            ("pods/log", [false, true, false, false, false, false]),
            ("pods/*", [true, true, false, false, false, false]),
            (
                "apps/deployments",
                [false, false, true, false, false, false],
            ),
            (
                "apps/deployments/scale",
                [false, false, false, true, false, false],
            ),
            ("*/scale", [false, false, false, false, false, false]),
            ("*/*/scale", [false, false, false, true, false, false]),
            ("*/*", [true, false, true, false, true, false]),
            ("*/deployments/*", [false, false, true, true, false, false]),
            (
                "cert-manager.io/certificates",
                [false, false, false, false, true, false],
            ),
            ("*", [true, true, true, true, true, false]),
        ];
        let requests = [&pods, &log, &deployments, &scale, &certificates, &version];
        for (pattern, expected) in cases {
            let parsed = ResourcePattern::parse(pattern).unwrap();
            for (request, expected) in requests.iter().zip(expected) {
                assert_eq!(
                    parsed.matches(request),
                    expected,
                    "{pattern} on {}",
                    request.path()
                );
            }
        }
        for bad in ["", "Pods", "a/b/c/d", "pods//log", "pods/"] {
            assert!(ResourcePattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn verb_sets() {
        let verbs = Verbs::parse(["get", "list", "watch"]).unwrap();
        assert!(verbs.contains("list") && !verbs.contains("create"));
        assert!(
            !verbs.contains("post"),
            "non-resource verbs are not Kubernetes verbs"
        );
        assert!(Verbs::parse(["*"]).unwrap().contains("deletecollection"));
        assert!(Verbs::parse([]).unwrap().is_empty());
        assert!(Verbs::parse(["read"]).is_err());
    }
}
