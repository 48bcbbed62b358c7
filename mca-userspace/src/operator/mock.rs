//! A mocked API server for the operator's tests (kube-rs's documented way: a `tower-test`
//! service behind a real `kube::Client`). It holds objects by path, answers GETs from them,
//! merges PATCHes into them (server-side apply and merge patches alike: close enough here),
//! replaces on PUT, answers 404 `Status` for what it does not hold, and records every request.

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
            let body = body.collect().await.expect("a body").to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let path = parts.uri.path().trim_end_matches("/status").to_owned();
            let mut state = shared.lock().expect("not poisoned");
            state
                .seen
                .push((parts.method.clone(), parts.uri.to_string(), body.clone()));
            let held = state.objects.get(&path).cloned();
            let (status, answer) = match (&parts.method, held) {
                (&Method::GET, Some(object)) => (StatusCode::OK, object),
                (&Method::PATCH, Some(mut object)) => {
                    json_patch::merge(&mut object, &body);
                    state.objects.insert(path, object.clone());
                    (StatusCode::OK, object)
                }
                (&Method::PATCH | &Method::PUT, _) => {
                    state.objects.insert(path, body.clone());
                    (StatusCode::OK, body)
                }
                _ => (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                           "status": "Failure", "reason": "NotFound", "code": 404,
                           "message": format!("{path} not found")}),
                ),
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
