//! Kubernetes request info: what a request does (verb) to which resource, derived from its
//! method, path and query exactly as the API server's `RequestInfoFactory` does it
//! (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go), so MCA's logs and routing agree
//! with the server's audit log and RBAC.
//!
//! Resource paths look like
//!
//! ```text
//! /api/{version}/namespaces/{namespace}/{resource}/{name}/{subresource}
//! /apis/{group}/{version}/{resource}/{name}
//! /apis/{group}/{version}/watch/namespaces/{namespace}/{resource}   (deprecated watch form)
//! ```
//!
//! Anything else (`/version`, `/healthz`, `/openapi/v3`, `/api`, `/apis`) is a non-resource
//! request whose verb is the lower-cased HTTP method.

use std::borrow::Cow;

use crate::query;

/// What a request does, as the API server sees it.
///
/// Every field is a slice of one string: the path first, then the verb and a name read from
/// the query (the fields that are not slices of the path). A request's info is one allocation
/// however many fields it has, and it rides every open watch until the watch ends.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct RequestInfo {
    text: Box<str>,
    is_resource_request: bool,
    path: Span,
    verb: Span,
    api_prefix: Span,
    api_group: Span,
    api_version: Span,
    namespace: Span,
    resource: Span,
    subresource: Span,
    name: Span,
}

/// Where a field is in [`RequestInfo::text`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl std::fmt::Debug for RequestInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestInfo")
            .field("is_resource_request", &self.is_resource_request)
            .field("path", &self.path())
            .field("verb", &self.verb())
            .field("api_prefix", &self.api_prefix())
            .field("api_group", &self.api_group())
            .field("api_version", &self.api_version())
            .field("namespace", &self.namespace())
            .field("resource", &self.resource())
            .field("subresource", &self.subresource())
            .field("name", &self.name())
            .finish()
    }
}

/// Subresources of a namespace object itself, which must not be mistaken for a resource
/// inside the namespace: `/api/v1/namespaces/x/status` is the namespace `x`'s status.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// A request target MCA will not read, because the API server might read it differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// A `%` not followed by two hex digits; Go's server refuses such a request with 400.
    #[error("the path has a malformed percent-escape")]
    BadEscape,
    /// Percent-escapes that decode to something other than UTF-8: no Kubernetes name.
    #[error("the path does not decode to UTF-8")]
    NotUtf8,
    /// `.`, `..` or an empty segment inside the path, which proxies and routers in front of
    /// or inside the API server may resolve differently from its request-info parser.
    #[error("the path has a '.', '..' or empty segment")]
    Segment,
}

/// The path as Go's `net/http` hands it to the API server (`URL.Path`): every `%XX` decoded,
/// `%2F` included, `+` kept. The API server's request-info parser reads that, so MCA must
/// too: `/api/v1/namespaces/default%2Fconfigmaps` is a LIST of configmaps in `default`, not a
/// namespace named `default%2Fconfigmaps`. Paths that could be read two ways are refused.
pub fn decode_path(path: &str) -> Result<Cow<'_, str>, PathError> {
    let decoded = if path.contains('%') {
        let bytes = path.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = |b: u8| (b as char).to_digit(16);
                let (Some(high), Some(low)) = (
                    bytes.get(i + 1).copied().and_then(hex),
                    bytes.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(PathError::BadEscape);
                };
                out.push((high * 16 + low) as u8);
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        Cow::Owned(String::from_utf8(out).map_err(|_| PathError::NotUtf8)?)
    } else {
        Cow::Borrowed(path)
    };
    let trimmed = decoded.trim_matches('/');
    let ambiguous = !trimmed.is_empty()
        && trimmed
            .split('/')
            .any(|segment| matches!(segment, "" | "." | ".."));
    if ambiguous {
        return Err(PathError::Segment);
    }
    Ok(decoded)
}

/// The most path segments request-info reads: `apis/{group}/{version}/watch/namespaces/{ns}/
/// {resource}/{name}/{subresource}`, and one more to tell a subresource from the end.
const MAX_SEGMENTS: usize = 10;

/// A resource request's fields, each a slice of the path or a static string, but the name,
/// which may come from the query.
#[derive(Default)]
struct Fields<'a> {
    verb: &'a str,
    api_prefix: &'a str,
    api_group: &'a str,
    api_version: &'a str,
    namespace: &'a str,
    resource: &'a str,
    subresource: &'a str,
    name: &'a str,
}

impl<'a> Fields<'a> {
    /// Reads a resource request from `method` and `path`'s segments; `None` for a
    /// non-resource request.
    fn read(method: &str, path: &'a str) -> Option<Self> {
        // Like Go's strings.Split(strings.Trim(path, "/"), "/"): inner empty segments stay.
        let mut segments = [""; MAX_SEGMENTS];
        let mut count = 0;
        for (slot, segment) in segments.iter_mut().zip(path.trim_matches('/').split('/')) {
            *slot = segment;
            count += 1;
        }
        let mut parts = &segments[..count];
        if parts.len() < 3 {
            return None;
        }
        let mut fields = Self {
            api_prefix: parts[0],
            ..Self::default()
        };
        parts = match parts[0] {
            "api" => &parts[1..],
            // A group needs /apis/{group}/{version}/{resource} at least.
            "apis" if parts.len() >= 4 => {
                fields.api_group = parts[1];
                &parts[2..]
            }
            _ => return None,
        };
        fields.api_version = parts[0];
        parts = &parts[1..];

        fields.verb = match parts[0] {
            // e.g. /api/v1/watch, which the server rejects: logged for what it is.
            "watch" | "proxy" if parts.len() < 2 => return None,
            "watch" => "watch",
            "proxy" => "proxy",
            _ => match method {
                "POST" => "create",
                "GET" | "HEAD" => "get",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                _ => "",
            },
        };
        if matches!(fields.verb, "watch" | "proxy") {
            parts = &parts[1..];
        }

        if parts[0] == "namespaces" && parts.len() > 1 {
            fields.namespace = parts[1];
            // /namespaces/{ns}/{resource}/... names a resource inside the namespace, unless
            // what follows is a subresource of the namespace object itself.
            if parts.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&parts[2]) {
                parts = &parts[2..];
            }
        }

        // parts: resource/name/subresource/anything-else; proxy paths carry no subresource.
        fields.resource = parts[0];
        fields.name = parts.get(1).copied().unwrap_or_default();
        if fields.verb != "proxy" {
            fields.subresource = parts.get(2).copied().unwrap_or_default();
        }
        Some(fields)
    }
}

/// Builds [`RequestInfo::text`]: the path, then each field that is not a slice of it.
struct Text<'p> {
    path: &'p str,
    text: String,
}

impl<'p> Text<'p> {
    fn new(path: &'p str, extra: usize) -> Self {
        let mut text = String::with_capacity(path.len() + extra);
        text.push_str(path);
        Self { path, text }
    }

    /// Where `field` is: in the path if it is a slice of it, else appended. Either way the
    /// span holds exactly `field`'s bytes.
    fn span(&mut self, field: &str) -> Span {
        let path = self.path.as_ptr() as usize;
        let at = field.as_ptr() as usize;
        let (start, end) = if at >= path && at + field.len() <= path + self.path.len() {
            (at - path, at - path + field.len())
        } else {
            let start = self.text.len();
            self.text.push_str(field);
            (start, self.text.len())
        };
        Span::new(start, end)
    }
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        // Request targets are far shorter than 4 GiB (hyper's limit is 64 KiB).
        let narrow = |at: usize| u32::try_from(at).expect("a request target under 4 GiB");
        Self {
            start: narrow(start),
            end: narrow(end),
        }
    }
}

impl RequestInfo {
    /// Decodes the path of the request target as the API server does ([`decode_path`]) and
    /// parses the result.
    pub fn from_target(method: &str, target: &str) -> Result<Self, PathError> {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        // The decoded path is parsed as it is: a `%3F` in it is part of the path, not the
        // start of a query.
        Ok(Self::parse_parts(
            method,
            &decode_path(path)?,
            query.unwrap_or_default(),
        ))
    }

    /// Parses `method` and `path_and_query` (the request target, e.g.
    /// `/api/v1/namespaces/default/pods?watch=1`). Never fails: unparseable paths are
    /// non-resource requests, which is also what the API server does.
    pub fn parse(method: &str, path_and_query: &str) -> Self {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, query),
            None => (path_and_query, ""),
        };
        Self::parse_parts(method, path, query)
    }

    /// Parses `method`, a path as the API server sees it, and the raw query.
    fn parse_parts(method: &str, path: &str, query: &str) -> Self {
        // Declared first: the name a field selector gives borrows from it.
        let selector;
        let Some(mut fields) = Fields::read(method, path) else {
            return Self::non_resource(method, path);
        };
        // A GET without a name is a list (or a watch); a DELETE without one a deletecollection.
        if fields.name.is_empty() {
            match fields.verb {
                "get" => {
                    fields.verb = if query::flag(query, "watch") {
                        "watch"
                    } else {
                        "list"
                    };
                    selector = list_selector(query);
                    if let Some(name) = selector.as_deref().and_then(exact_name_match) {
                        fields.name = name;
                    }
                }
                "delete" => fields.verb = "deletecollection",
                _ => {}
            }
        }
        let mut text = Text::new(path, fields.verb.len() + fields.name.len());
        Self {
            is_resource_request: true,
            path: text.span(path),
            verb: text.span(fields.verb),
            api_prefix: text.span(fields.api_prefix),
            api_group: text.span(fields.api_group),
            api_version: text.span(fields.api_version),
            namespace: text.span(fields.namespace),
            resource: text.span(fields.resource),
            subresource: text.span(fields.subresource),
            name: text.span(fields.name),
            text: text.text.into_boxed_str(),
        }
    }

    /// A non-resource request: only its path and its verb, the lower-cased method.
    fn non_resource(method: &str, path: &str) -> Self {
        let mut text = Text::new(path, method.len());
        let verb_start = text.text.len();
        text.text
            .extend(method.chars().map(|c| c.to_ascii_lowercase()));
        Self {
            is_resource_request: false,
            path: Span::new(0, path.len()),
            verb: Span::new(verb_start, text.text.len()),
            text: text.text.into_boxed_str(),
            ..Self::default()
        }
    }

    fn field(&self, span: Span) -> &str {
        &self.text[span.start as usize..span.end as usize]
    }

    /// Whether the path names an API resource; if false only [`Self::verb`] and
    /// [`Self::path`] are meaningful.
    pub fn is_resource_request(&self) -> bool {
        self.is_resource_request
    }

    /// The request path, without the query.
    pub fn path(&self) -> &str {
        self.field(self.path)
    }

    /// Kubernetes verb: get, list, watch, create, update, patch, delete, deletecollection,
    /// proxy; for non-resource requests the lower-cased HTTP method.
    pub fn verb(&self) -> &str {
        self.field(self.verb)
    }

    /// `api` or `apis`; empty for non-resource requests.
    pub fn api_prefix(&self) -> &str {
        self.field(self.api_prefix)
    }

    /// API group; empty for the core group.
    pub fn api_group(&self) -> &str {
        self.field(self.api_group)
    }

    /// API version, e.g. `v1`.
    pub fn api_version(&self) -> &str {
        self.field(self.api_version)
    }

    /// Namespace; empty for cluster-scoped requests.
    pub fn namespace(&self) -> &str {
        self.field(self.namespace)
    }

    /// Resource, e.g. `pods`.
    pub fn resource(&self) -> &str {
        self.field(self.resource)
    }

    /// Subresource, e.g. `log`, `exec`, `status`.
    pub fn subresource(&self) -> &str {
        self.field(self.subresource)
    }

    /// Object name; for lists also taken from a `metadata.name=` field selector.
    pub fn name(&self) -> &str {
        self.field(self.name)
    }

    /// Whether the API server treats the request as long-running (its
    /// `BasicLongRunningRequestCheck`): the `watch` and `proxy` verbs, the `attach`, `exec`,
    /// `log`, `portforward` and `proxy` subresources, and `/debug/pprof/` profiles. Such
    /// requests hold their connection for as long as the client wants.
    pub fn is_long_running(&self) -> bool {
        if matches!(self.verb(), "watch" | "proxy") {
            return true;
        }
        if self.is_resource_request {
            matches!(
                self.subresource(),
                "attach" | "exec" | "log" | "portforward" | "proxy"
            )
        } else {
            self.path().starts_with("/debug/pprof/")
        }
    }
}

/// A list's field selector, read as the API server reads its list options ([`crate::query`]):
/// the first value only, and none when an integer option does not decode (the API server then
/// drops them all but `watch`). One narrowed to `metadata.name=x` names that object (RBAC
/// checks it by name).
fn list_selector(query: &str) -> Option<Cow<'_, str>> {
    let decodes = ["timeoutSeconds", "limit"]
        .iter()
        .all(|key| query::first(query, key).is_none_or(|value| value.parse::<i64>().is_ok()));
    query::first(query, "fieldSelector").filter(|_| decodes)
}
/// The name in a field selector that requires `metadata.name` to equal exactly one valid path
/// segment, as `fields.Selector.RequiresExactMatch("metadata.name")` finds it.
fn exact_name_match(selector: &str) -> Option<&str> {
    let mut found = None;
    for term in selector.split(',') {
        let (field, value) = term
            .split_once("==")
            .or_else(|| term.split_once('='))
            .filter(|(field, _)| !field.ends_with('!'))?;
        if field.trim() == "metadata.name" {
            found = Some(value.trim());
        }
    }
    found.filter(|name| {
        !name.is_empty() && *name != "." && *name != ".." && !name.contains(['/', '%'])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (method, target, verb, group, version, namespace, resource, subresource, name)
    #[allow(clippy::type_complexity)]
    const RESOURCE_CASES: &[(&str, &str, &str, &str, &str, &str, &str, &str, &str)] = &[
        (
            "GET",
            "/api/v1/namespaces",
            "list",
            "",
            "v1",
            "",
            "namespaces",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other",
            "get",
            "",
            "v1",
            "other",
            "namespaces",
            "",
            "other",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods",
            "list",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo",
            "get",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "HEAD",
            "/api/v1/namespaces/other/pods/foo",
            "get",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        ("GET", "/api/v1/pods", "list", "", "v1", "", "pods", "", ""),
        (
            "POST",
            "/api/v1/namespaces/other/pods",
            "create",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/pods/foo",
            "update",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/other/pods/foo",
            "patch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods/foo",
            "delete",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "DELETE",
            "/api/v1/namespaces/other/pods",
            "deletecollection",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/log",
            "get",
            "",
            "v1",
            "other",
            "pods",
            "log",
            "foo",
        ),
        (
            "POST",
            "/api/v1/namespaces/other/pods/foo/exec",
            "create",
            "",
            "v1",
            "other",
            "pods",
            "exec",
            "foo",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods/foo/portforward",
            "get",
            "",
            "v1",
            "other",
            "pods",
            "portforward",
            "foo",
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/finalize",
            "update",
            "",
            "v1",
            "other",
            "namespaces",
            "finalize",
            "other",
        ),
        (
            "PUT",
            "/api/v1/namespaces/other/status",
            "update",
            "",
            "v1",
            "other",
            "namespaces",
            "status",
            "other",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/watch/namespaces/other/pods/foo",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=1",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=true&resourceVersion=5",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=false",
            "list",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?watch=yes",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo",
            "list",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3D%3Dfoo&watch=1",
            "watch",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "GET",
            "/api/v1/namespaces/other/pods?fieldSelector=metadata.name!%3Dfoo",
            "list",
            "",
            "v1",
            "other",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo",
            "proxy",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/other/deployments",
            "list",
            "apps",
            "v1",
            "other",
            "deployments",
            "",
            "",
        ),
        (
            "GET",
            "/apis/apps/v1/namespaces/other/deployments/web/scale",
            "get",
            "apps",
            "v1",
            "other",
            "deployments",
            "scale",
            "web",
        ),
        (
            "GET",
            "/apis/extensions/v1beta1/watch/namespaces/other/ingresses",
            "watch",
            "extensions",
            "v1beta1",
            "other",
            "ingresses",
            "",
            "",
        ),
        (
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            "get",
            "rbac.authorization.k8s.io",
            "v1",
            "",
            "clusterroles",
            "",
            "admin",
        ),
        (
            "GET",
            "//api/v1/pods//",
            "list",
            "",
            "v1",
            "",
            "pods",
            "",
            "",
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/other/pods/foo/sub/path",
            "proxy",
            "",
            "v1",
            "other",
            "pods",
            "",
            "foo",
        ),
        ("OPTIONS", "/api/v1/pods", "", "", "v1", "", "pods", "", ""),
    ];

    #[test]
    fn duplicate_and_odd_parameters_are_read_as_the_api_server_reads_them() {
        // (query, verb, name): what kube-apiserver's request-info resolver makes of a GET of
        // /api/v1/namespaces/a/pods with that query.
        let cases = [
            ("watch=false&watch=1", "list", ""),
            ("watch=1&watch=false", "watch", ""),
            ("watch=0&watch=true", "list", ""),
            ("watch=FALSE", "list", ""),
            ("watch=yes", "watch", ""),
            ("watch=", "watch", ""),
            ("watch", "watch", ""),
            ("watch=1;x=1", "list", ""),
            ("watch=%zz&watch=1", "watch", ""),
            ("%77atch=1", "watch", ""),
            (
                "fieldSelector=metadata.name%3Da&fieldSelector=metadata.name%3Db",
                "list",
                "a",
            ),
            ("fieldSelector=metadata.name%3Da&limit=5", "list", "a"),
            ("fieldSelector=metadata.name%3Da&limit=five", "list", ""),
            (
                "fieldSelector=metadata.name%3Da&timeoutSeconds=",
                "list",
                "",
            ),
            (
                "watch=1&fieldSelector=metadata.name%3Da&limit=x",
                "watch",
                "",
            ),
            ("fieldSelector=metadata.name%3Da;b", "list", ""),
        ];
        for (query, verb, name) in cases {
            let info = RequestInfo::parse("GET", &format!("/api/v1/namespaces/a/pods?{query}"));
            assert_eq!((info.verb(), info.name()), (verb, name), "{query}");
        }
    }

    #[test]
    fn resource_requests() {
        for &(method, target, verb, group, version, ns, resource, sub, name) in RESOURCE_CASES {
            let info = RequestInfo::parse(method, target);
            let got = (
                info.is_resource_request(),
                info.verb(),
                info.api_group(),
                info.api_version(),
                info.namespace(),
                info.resource(),
                info.subresource(),
                info.name(),
            );
            assert_eq!(
                got,
                (true, verb, group, version, ns, resource, sub, name),
                "{method} {target}"
            );
        }
    }

    #[test]
    fn non_resource_requests() {
        for (method, target) in [
            ("GET", "/"),
            ("GET", "/version"),
            ("GET", "/api"),
            ("GET", "/apis"),
            ("GET", "/api/v1"),
            ("GET", "/apis/apps/v1"),
            ("GET", "/healthz/ready"),
            ("GET", "/openapi/v3/apis/apps/v1"),
            ("GET", "/api/v1/watch"),
            ("POST", "/other/v1/pods"),
        ] {
            let info = RequestInfo::parse(method, target);
            assert!(
                !info.is_resource_request(),
                "{target} is a resource request"
            );
            assert_eq!(info.verb(), method.to_ascii_lowercase());
            assert_eq!(info.path(), target);
        }
    }

    #[test]
    fn path_excludes_query() {
        let info = RequestInfo::parse("GET", "/version?timeout=32s");
        assert_eq!(info.path(), "/version");
    }

    #[test]
    fn fields_outside_the_path_are_kept_beside_it() {
        // The verb and a field selector's (decoded) name are not slices of the path.
        let info = RequestInfo::parse(
            "GET",
            "/api/v1/namespaces/a/pods?fieldSelector=metadata.name%3Dweb&watch=1",
        );
        assert_eq!(
            (info.verb(), info.namespace(), info.name(), info.path()),
            ("watch", "a", "web", "/api/v1/namespaces/a/pods")
        );
        // An extension method's verb, lower-cased, for a non-resource request.
        let info = RequestInfo::parse("PROPFIND", "/version");
        assert_eq!((info.verb(), info.path()), ("propfind", "/version"));
        // Segments past the ones request-info reads change nothing.
        let info = RequestInfo::parse(
            "GET",
            "/apis/g/v1/watch/namespaces/a/things/t/proxy/x/y/z/w",
        );
        assert_eq!(
            (
                info.verb(),
                info.resource(),
                info.name(),
                info.subresource()
            ),
            ("watch", "things", "t", "proxy")
        );
        let debug = format!("{info:?}");
        assert!(debug.contains(r#"resource: "things""#), "{debug}");
    }

    #[test]
    fn long_running_requests_are_the_api_servers() {
        let long =
            |method: &str, target: &str| RequestInfo::parse(method, target).is_long_running();
        assert!(long("GET", "/api/v1/namespaces/a/pods?watch=1"));
        assert!(long("GET", "/api/v1/watch/namespaces/a/pods"));
        assert!(long("GET", "/api/v1/namespaces/a/pods/p/log?follow=true"));
        assert!(long("GET", "/api/v1/namespaces/a/pods/p/log"));
        assert!(long("POST", "/api/v1/namespaces/a/pods/p/exec?command=ls"));
        assert!(long("GET", "/api/v1/namespaces/a/pods/p/attach"));
        assert!(long("POST", "/api/v1/namespaces/a/pods/p/portforward"));
        assert!(long("GET", "/api/v1/namespaces/a/services/s/proxy/healthz"));
        assert!(long("GET", "/api/v1/proxy/namespaces/a/pods/p"));
        assert!(long("GET", "/debug/pprof/profile"));
        assert!(!long("GET", "/api/v1/namespaces/a/pods"));
        assert!(!long("GET", "/api/v1/namespaces/a/pods?watch=false"));
        assert!(!long("PUT", "/api/v1/namespaces/a/pods/p/status"));
        assert!(!long("GET", "/version"));
        // A non-resource path is not a subresource, whatever its segments say.
        assert!(!long("GET", "/apis/exec"));
    }

    #[test]
    fn paths_are_decoded_as_the_api_server_decodes_them() {
        let read = |target: &str| RequestInfo::from_target("GET", target);
        // (target, verb, namespace, resource, name)
        let cases = [
            (
                "/api/v1/namespaces/default%2Fconfigmaps",
                "list",
                "default",
                "configmaps",
                "",
            ),
            (
                "/api/v1/namespaces/default%2fconfigmaps?watch=1",
                "watch",
                "default",
                "configmaps",
                "",
            ),
            (
                "/api/v1/namespaces/team%2Db/pods/web",
                "get",
                "team-b",
                "pods",
                "web",
            ),
            (
                "/api/v1/namespaces/default/pods/a+b",
                "get",
                "default",
                "pods",
                "a+b",
            ),
            // An encoded `?` belongs to the path (found by fuzzing: it was taken for a query).
            (
                "/api/v1/namespaces/default%3Fwatch=1/pods",
                "list",
                "default?watch=1",
                "pods",
                "",
            ),
            (
                "/api/v1/namespaces/default/pods/",
                "list",
                "default",
                "pods",
                "",
            ),
            (
                "/api/v1/namespaces/default/pods?labelSelector=a%3Db",
                "list",
                "default",
                "pods",
                "",
            ),
        ];
        for (target, verb, namespace, resource, name) in cases {
            let info = read(target).unwrap();
            assert_eq!(
                (info.verb(), info.namespace(), info.resource(), info.name()),
                (verb, namespace, resource, name),
                "{target}"
            );
        }
        assert_eq!(
            read("/api/v1/namespaces/default%2Fconfigmaps")
                .unwrap()
                .path(),
            "/api/v1/namespaces/default/configmaps"
        );
        let refused = [
            ("/api/v1/namespaces/a/%2E%2E/b/pods", PathError::Segment),
            ("/api/v1/namespaces/a/../b/pods", PathError::Segment),
            ("/api/v1/namespaces/./pods", PathError::Segment),
            ("/api/v1/namespaces/team-b//configmaps", PathError::Segment),
            ("/api/v1/namespaces/a%2F%2Fb", PathError::Segment),
            ("/api/v1/namespaces/%zz", PathError::BadEscape),
            ("/api/v1/namespaces/a%2", PathError::BadEscape),
            ("/api/v1/namespaces/%FF", PathError::NotUtf8),
        ];
        for (target, error) in refused {
            assert_eq!(read(target), Err(error), "{target}");
        }
        // Leading and trailing slashes are trimmed by the API server too; the root is fine.
        assert!(read("/").is_ok() && read("//api").is_ok() && read("/version/").is_ok());
    }
}
