//! A mocked API server for the operator's tests (kube-rs's documented way: a `tower-test`
//! service behind a real `kube::Client`). It holds objects by path, answers GETs from them,
//! creates on POST (409 if the name is taken), merges PATCHes into them (server-side apply
//! and merge patches alike, close enough here; a strategic merge patch merges lists of
//! named objects by name, as for a webhook configuration's entries), replaces on PUT, answers
//! 409 to a PUT or PATCH whose resourceVersion is not the one held, 404 `Status` for what it
//! does not hold, and records every request.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use kube::{Client, client::Body};
use serde_json::{Value, json};

/// One request received: method, path and query, JSON body.
pub type Seen = (Method, String, Value);

/// What the server holds and saw.
#[derive(Debug, Default)]
pub struct State {
    /// Objects by path (a `/status` subresource is its object's path).
    pub objects: BTreeMap<String, Value>,
    /// Every request, in order.
    pub seen: Vec<Seen>,
}

/// The body of the first PATCH of a path containing `path`.
pub fn patched(seen: &[Seen], path: &str) -> Value {
    seen.iter()
        .find(|(m, uri, _)| *m == Method::PATCH && uri.contains(path))
        .map(|(_, _, body)| body.clone())
        .unwrap_or_else(|| panic!("no PATCH of {path}"))
}

/// A client talking to a mocked server holding `objects`.
pub fn api(objects: impl IntoIterator<Item = (String, Value)>) -> (Client, Arc<Mutex<State>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let state = Arc::new(Mutex::new(State {
        objects: objects.into_iter().collect(),
        seen: Vec::new(),
    }));
    let shared = Arc::clone(&state);
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let strategic = parts.headers.get(http::header::CONTENT_TYPE)
                == Some(&http::HeaderValue::from_static(
                    "application/strategic-merge-patch+json",
                ));
            let body = body.collect().await.expect("a body").to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let path = parts.uri.path().trim_end_matches("/status").to_owned();
            let mut state = shared.lock().expect("not poisoned");
            state
                .seen
                .push((parts.method.clone(), parts.uri.to_string(), body.clone()));
            let held = state.objects.get(&path).cloned();
            let version = |object: &Value| object["metadata"]["resourceVersion"].clone();
            let (status, answer) = match (&parts.method, held) {
                (&Method::GET, Some(object)) => (StatusCode::OK, object),
                (&Method::POST, _) => {
                    let item =
                        format!("{path}/{}", body["metadata"]["name"].as_str().unwrap_or(""));
                    if state.objects.contains_key(&item) {
                        (StatusCode::CONFLICT, status(409, "AlreadyExists", &item))
                    } else {
                        (StatusCode::CREATED, body.clone())
                    }
                }
                (&Method::PUT, Some(object)) if version(&object) != version(&body) => {
                    (StatusCode::CONFLICT, status(409, "Conflict", &path))
                }
                (&Method::PATCH, Some(object))
                    if !version(&body).is_null() && version(&object) != version(&body) =>
                {
                    (StatusCode::CONFLICT, status(409, "Conflict", &path))
                }
                (&Method::PATCH, Some(mut object)) if strategic => {
                    merge_by_name(&mut object, &body);
                    (StatusCode::OK, object)
                }
                (&Method::PATCH, Some(mut object)) => {
                    json_patch::merge(&mut object, &body);
                    (StatusCode::OK, object)
                }
                (&Method::PATCH | &Method::PUT, _) => (StatusCode::OK, body.clone()),
                _ => (StatusCode::NOT_FOUND, status(404, "NotFound", &path)),
            };
            let answer = if status.is_success() && parts.method != Method::GET {
                // Every write is a new version.
                let mut answer = answer;
                let next = answer["metadata"]["resourceVersion"]
                    .as_str()
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
                    + 1;
                answer["metadata"]["resourceVersion"] = json!(next.to_string());
                let at = if parts.method == Method::POST {
                    format!(
                        "{path}/{}",
                        answer["metadata"]["name"].as_str().unwrap_or("")
                    )
                } else {
                    path.clone()
                };
                state.objects.insert(at, answer.clone());
                answer
            } else {
                answer
            };
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(answer.to_string().into_bytes()))
                .expect("a response");
            respond.send_response(response);
        }
    });
    (Client::new(service, "default"), state)
}

/// A strategic merge patch, as far as the operator uses one: objects merge key by key, a
/// list of objects with names merges element by element by name, anything else replaces.
fn merge_by_name(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                merge_by_name(target.entry(key).or_insert(Value::Null), value);
            }
        }
        (Value::Array(target), Value::Array(patch))
            if patch.iter().all(|item| item["name"].is_string()) =>
        {
            for item in patch {
                match target.iter_mut().find(|t| t["name"] == item["name"]) {
                    Some(existing) => merge_by_name(existing, item),
                    None => target.push(item.clone()),
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}

/// A failure `Status`.
fn status(code: u16, reason: &str, path: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "reason": reason, "code": code, "message": format!("{path}: {reason}")})
}
