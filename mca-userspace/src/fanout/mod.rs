//! Fan-out routes (`strategy: fanOut`): one view of a resource across the route's clusters.
//!
//! - A LIST asks every healthy cluster and answers with one list (or Table) of all their
//!   items, each annotated with its cluster, streamed as they arrive (`stream`). With
//!   `limit`, pages walk the clusters in order under a composite `continue` token. The
//!   list's `resourceVersion` is composite: each cluster's own, so a WATCH from it resumes
//!   every cluster where it was.
//! - A WATCH multiplexes every cluster's stream into one (`watch`). An event's
//!   `resourceVersion` is the composite of every cluster's latest, so a client can resume
//!   from any event. A cluster whose stream fails is retried from its last version, and one
//!   that lost its history is listed again ([`held`]), without the client reconnecting.
//! - A GET of one object answers from the first cluster (in order) that has it.
//! - Clusters that fail are left out, said in a `Warning` header; writes are refused with
//!   405: a merged view has no single place to write to.
//!
//! MCA reads the clusters' answers, so it asks them for JSON; a client that accepts only
//! protobuf gets 406.

pub mod held;
pub mod merge;
pub mod scan;
pub mod shallow;
mod stream;
pub mod token;
mod watch;

use std::{
    borrow::Cow,
    sync::{Arc, LazyLock},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::join_all;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use self::{
    held::{ListKey, Snapshots},
    merge::Page,
    token::{Continue, Versions},
};
use crate::{
    backoff::Backoff,
    cluster::{Cluster, Registry},
    query,
    reqinfo::RequestInfo,
    route::ClusterId,
    status::{Reason, Status},
    upstream::{self, UpstreamBody},
};

/// The largest answer of one cluster read whole (a page of a paginated list, one object, the
/// list a watch resumes from); an unpaginated list is streamed instead ([`stream`]).
const LIST_LIMIT: usize = 32 << 20;
/// How long one cluster has to answer a list or the start of a watch.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Between attempts to restart a cluster's failed watch: quick at first, since a merged watch
/// missing a cluster is a client waiting.
const BACKOFF: Backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));

/// Why a fan-out request is answered by MCA itself.
pub type Refusal = Status;

/// The response body of a fan-out request.
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, tower::BoxError>;

/// Serves `head` (a request on a fan-out route named `route`) from `clusters`, in order.
pub async fn serve(
    registry: &Arc<Registry>,
    ids: &[ClusterId],
    route: &str,
    info: &RequestInfo,
    head: http::request::Parts,
) -> Result<Response<Body>, Refusal> {
    let accept = json_accept(&head)?;
    let clusters: Vec<&Cluster> = ids.iter().map(|&id| registry.get(id)).collect();
    match info.verb() {
        "list" => list(&clusters, head, &accept).await,
        "watch" => watch::watch(registry, ids, head, &accept).await,
        "get" => first_found(&clusters, head, &accept).await,
        verb => Err(Status::new(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::MethodNotAllowed,
            format!(
                "route {route:?} fans out across clusters and serves only get, list and watch, \
                 not {verb}"
            ),
        )),
    }
}

/// What to ask the clusters for: the Table when the client wants one, else plain JSON.
fn json_accept(head: &http::request::Parts) -> Result<String, Refusal> {
    let accept = head
        .headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    let wants_table = accept.contains("as=Table");
    let takes_json = accept.is_empty()
        || accept
            .split(',')
            .any(|media| media.contains("json") || media.trim().starts_with("*/*"));
    if !takes_json {
        return Err(Status::new(
            StatusCode::NOT_ACCEPTABLE,
            Reason::NotAcceptable,
            "a fan-out route merges JSON: accept application/json",
        ));
    }
    Ok(if wants_table {
        "application/json;as=Table;v=v1;g=meta.k8s.io,application/json".to_owned()
    } else {
        "application/json".to_owned()
    })
}

/// The request for one cluster: the client's, with `accept`, uncompressed, and the query's
/// `resourceVersion` and `continue` replaced by that cluster's; `exact` reads at exactly that
/// version.
fn cluster_request(
    head: &http::request::Parts,
    accept: &str,
    version: Option<&str>,
    continue_token: Option<&str>,
    exact: bool,
) -> Request<UpstreamBody> {
    let replaced = ["resourceVersion", "continue", "resourceVersionMatch"];
    let mut query: Vec<(Cow<'_, str>, Cow<'_, str>)> = query::pairs(head.uri.query().unwrap_or(""))
        .filter(|(key, _)| {
            !replaced.contains(&key.as_ref()) || (key == "resourceVersionMatch" && !exact)
        })
        .collect();
    if let Some(version) = version {
        query.push(("resourceVersion".into(), version.into()));
        if exact {
            query.push(("resourceVersionMatch".into(), "Exact".into()));
        }
    }
    if let Some(token) = continue_token {
        query.push(("continue".into(), token.into()));
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&query)
        .finish();
    let target = if query.is_empty() {
        head.uri.path().to_owned()
    } else {
        format!("{}?{query}", head.uri.path())
    };
    let mut request = Request::from_parts(upstream::copy_head(head), UpstreamBody::default());
    *request.uri_mut() = target.parse().expect("a path and an encoded query");
    request.headers_mut().remove(header::ACCEPT_ENCODING);
    if let Ok(accept) = HeaderValue::from_str(accept) {
        request.headers_mut().insert(header::ACCEPT, accept);
    }
    request
}

/// The client's `resourceVersion`: a composite to split, or one value for every cluster.
fn versions(head: &http::request::Parts) -> Result<(Option<Versions>, Option<String>), Refusal> {
    let Some(version) = query_value(head, "resourceVersion") else {
        return Ok((None, None));
    };
    match Versions::decode(&version) {
        Ok(Some(versions)) => Ok((Some(versions), None)),
        Ok(None) => Ok((None, Some(version))),
        Err(why) => Err(bad_request(format!("resourceVersion: {why}"))),
    }
}

/// The parameter `key` of `head`'s query, as the API server reads it ([`query::first`]).
fn query_value(head: &http::request::Parts, key: &str) -> Option<String> {
    query::first(head.uri.query()?, key).map(Cow::into_owned)
}

fn bad_request(message: String) -> Status {
    Status::new(StatusCode::BAD_REQUEST, Reason::BadRequest, message)
}

/// One cluster's version for a request: from the composite, else the client's own.
fn version_for<'a>(
    cluster: &str,
    composite: Option<&'a Versions>,
    plain: Option<&'a str>,
) -> Option<&'a str> {
    match composite {
        Some(versions) => versions.0.get(cluster).map(String::as_str),
        None => plain,
    }
}

/// Sends a read to one cluster; the answer's JSON, or the reason there is none.
async fn read(
    cluster: &Cluster,
    request: Request<UpstreamBody>,
) -> Result<Value, (StatusCode, String)> {
    let (_, value) = cluster.read_json(request, LIST_LIMIT, TIMEOUT).await?;
    Ok(value)
}

/// The response for a merged JSON value, with a warning per missing cluster.
fn respond(value: &Value, missing: &[(String, (StatusCode, String))]) -> Response<Body> {
    let mut response = Response::new(
        Full::new(Bytes::from(value.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    warn_missing(response.headers_mut(), missing);
    response
}

fn warn_missing(headers: &mut http::HeaderMap, missing: &[(String, (StatusCode, String))]) {
    for (cluster, (_, why)) in missing {
        let warning = format!(
            "299 - \"cluster {cluster} is missing from this merged view: {}\"",
            why.replace('"', "'")
        );
        if let Ok(value) = HeaderValue::from_str(&warning) {
            headers.append(header::WARNING, value);
        }
    }
}

/// No cluster answered: their first error, as a Status.
fn none_answered(missing: &[(String, (StatusCode, String))]) -> Status {
    let reasons: Vec<String> = missing
        .iter()
        .map(|(cluster, (_, why))| format!("{cluster}: {why}"))
        .collect();
    Status::new(
        StatusCode::SERVICE_UNAVAILABLE,
        Reason::ServiceUnavailable,
        format!(
            "no cluster of the fan-out route answered: {}",
            reasons.join("; ")
        ),
    )
}

async fn list(
    clusters: &[&Cluster],
    head: http::request::Parts,
    accept: &str,
) -> Result<Response<Body>, Refusal> {
    let (composite, plain) = versions(&head)?;
    if query_value(&head, "limit").is_some_and(|limit| limit != "0") {
        return page(
            clusters,
            &head,
            accept,
            composite.as_ref(),
            plain.as_deref(),
        )
        .await;
    }
    stream::list(
        clusters,
        &head,
        accept,
        composite.as_ref(),
        plain.as_deref(),
    )
    .await
}

/// One page of a paginated merged list: the clusters are paged one after the other. The first
/// page asks every cluster at once, so that its composite version names every cluster's; a
/// later page that starts a cluster asks for that cluster's recorded version exactly, so the
/// pages of one list are one snapshot per cluster.
async fn page(
    clusters: &[&Cluster],
    head: &http::request::Parts,
    accept: &str,
    composite: Option<&Versions>,
    plain: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let mut missing = Vec::new();
    let (index, list, versions) = match query_value(head, "continue").filter(|t| !t.is_empty()) {
        None => {
            let asks = clusters.iter().map(|cluster| {
                let version = version_for(cluster.name(), composite, plain);
                read(cluster, cluster_request(head, accept, version, None, false))
            });
            let mut first = None;
            let mut versions = Versions::default();
            for (index, answer) in join_all(asks).await.into_iter().enumerate() {
                let name = clusters[index].name().to_string();
                match answer {
                    Ok(list) => {
                        if let Some(version) = list["metadata"]["resourceVersion"].as_str() {
                            versions.0.insert(name, version.to_owned());
                        }
                        first.get_or_insert((index, list));
                    }
                    Err(why) => missing.push((name, why)),
                }
            }
            let Some((index, list)) = first else {
                return Err(none_answered(&missing));
            };
            (index, list, versions)
        }
        Some(token) => {
            let start =
                Continue::decode(&token).map_err(|why| bad_request(format!("continue: {why}")))?;
            let Some(mut index) = clusters.iter().position(|c| **c.name() == *start.cluster) else {
                return Err(bad_request(format!(
                    "continue: cluster {:?} is not on this route (any more)",
                    start.cluster
                )));
            };
            let versions = Versions(start.versions);
            let mut token = start.token;
            loop {
                let cluster = clusters[index];
                // A cluster's continue token carries its own version; a cluster started on
                // this page is read at the version the first page recorded for it.
                let request = if token.is_empty() {
                    let recorded = versions.0.get(&**cluster.name()).map(String::as_str);
                    let version = recorded.or(version_for(cluster.name(), composite, plain));
                    cluster_request(head, accept, version, None, recorded.is_some())
                } else {
                    cluster_request(head, accept, None, Some(&token), false)
                };
                match read(cluster, request).await {
                    Ok(list) => break (index, list, versions),
                    Err(why) => missing.push((cluster.name().to_string(), why)),
                }
                index += 1;
                token.clear();
                if index == clusters.len() {
                    // Earlier pages were served: end the list with an empty page.
                    let (kind, api_version) = &start.kind;
                    let items = if kind == "Table" { "rows" } else { "items" };
                    let mut empty = serde_json::json!({"kind": kind, "apiVersion": api_version,
                                                       "metadata": {}, items: []});
                    if kind == "Table" {
                        empty["columnDefinitions"] = serde_json::json!([]);
                    }
                    let page = Page {
                        cluster: cluster.name().to_string(),
                        list: empty,
                    };
                    let key = list_key(head, accept, versions.encode());
                    SNAPSHOTS.record(&key, &page.cluster, held::kept(&page.list), true);
                    return Ok(respond(
                        &merge::lists(vec![page], &versions, None),
                        &missing,
                    ));
                }
            }
        }
    };

    let page = Page {
        cluster: clusters[index].name().to_string(),
        list,
    };
    let next = match page.continues() {
        Some(more) => Some((page.cluster.clone(), more.to_owned())),
        None => clusters
            .get(index + 1)
            .map(|next| (next.name().to_string(), String::new())),
    };
    let kind = (
        page.list["kind"].as_str().unwrap_or_default().to_owned(),
        page.list["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let key = list_key(head, accept, versions.encode());
    SNAPSHOTS.record(&key, &page.cluster, held::kept(&page.list), next.is_none());
    let next = next.map(|(cluster, token)| {
        Continue {
            cluster,
            token,
            versions: versions.0.clone(),
            kind,
        }
        .encode()
    });
    Ok(respond(
        &merge::lists(vec![page], &versions, next),
        &missing,
    ))
}

async fn first_found(
    clusters: &[&Cluster],
    head: http::request::Parts,
    accept: &str,
) -> Result<Response<Body>, Refusal> {
    let mut missing = Vec::new();
    let mut not_found = None;
    for cluster in clusters {
        match read(cluster, cluster_request(&head, accept, None, None, false)).await {
            Ok(mut object) => {
                if object["kind"] != "Table" {
                    merge::annotate(&mut object, cluster.name());
                }
                return Ok(respond(&object, &missing));
            }
            Err((StatusCode::NOT_FOUND, why)) => not_found = Some(why),
            Err(why) => missing.push((cluster.name().to_string(), why)),
        }
    }
    match not_found {
        Some(why) => Err(Status::new(StatusCode::NOT_FOUND, Reason::NotFound, why)),
        None => Err(none_answered(&missing)),
    }
}

/// The recent merged lists, for the watches that resume from their versions.
static SNAPSHOTS: LazyLock<Snapshots> = LazyLock::new(Snapshots::default);

/// Which merged list (or the watch that follows it) `head` is: its path and selectors, its
/// form, and the composite `version`.
fn list_key(head: &http::request::Parts, accept: &str, version: String) -> ListKey {
    let selectors: Vec<String> = ["labelSelector", "fieldSelector"]
        .iter()
        .filter_map(|key| query_value(head, key).map(|value| format!("{key}={value}")))
        .collect();
    ListKey {
        what: format!("{}?{}", head.uri.path(), selectors.join("&")),
        table: accept.contains("as=Table"),
        version,
    }
}
