//! Misbehaviour on request, for the tests of MCA's bounds: a request carrying
//! `x-mca-test-fault: <fault>` gets the fault instead of its answer (after authentication, so
//! credentials still count).
//!
//! - `stall`: no answer at all, until the client (MCA) gives up; the server counts such
//!   requests while they are open ([`ApiServer::stalled`](super::ApiServer::stalled)), so a test
//!   sees MCA cancel them.
//! - `stall-body`: 200 and the start of a JSON body, then nothing.
//! - `redirect <url>`: 302 to `url`.
//! - `huge-header`: 200 with a 2 MiB response header.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};

use super::{Body, State, bytes_response};

/// The request header that asks for a fault.
pub const HEADER: &str = "x-mca-test-fault";

/// Requests open now that asked for `stall` or `stall-body`.
#[derive(Debug, Default)]
pub struct Stalled(Arc<AtomicUsize>);

impl Stalled {
    /// How many.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    fn hold(&self) -> Held {
        self.0.fetch_add(1, Ordering::SeqCst);
        Held(Arc::clone(&self.0))
    }
}

/// One stalled request; dropped when the client cancels it.
struct Held(Arc<AtomicUsize>);

impl Drop for Held {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The fault `request` asks for, if any.
pub async fn serve(state: &State, request: &Request<Incoming>) -> Option<Response<Body>> {
    let fault = request.headers().get(HEADER)?.to_str().ok()?.to_owned();
    let (name, argument) = fault.split_once(' ').unwrap_or((&fault, ""));
    Some(match name {
        "stall" => {
            let _held = state.stalled.hold();
            std::future::pending::<()>().await;
            unreachable!("pending never resolves")
        }
        "stall-body" => {
            let held = state.stalled.hold();
            let chunks = futures_util::stream::once(async { Ok(Frame::data(Bytes::from("{"))) })
                .chain(futures_util::stream::once(async move {
                    let _held = held;
                    std::future::pending::<Result<Frame<Bytes>, Infallible>>().await
                }));
            let mut response = Response::new(StreamBody::new(chunks).boxed_unsync());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        "redirect" => {
            let mut response = bytes_response(
                StatusCode::FOUND,
                "text/plain",
                Bytes::from_static(b"moved"),
            );
            response.headers_mut().insert(
                header::LOCATION,
                HeaderValue::from_str(argument).expect("a header value"),
            );
            response
        }
        "huge-header" => {
            let mut response =
                bytes_response(StatusCode::OK, "text/plain", Bytes::from_static(b"ok"));
            let huge = "x".repeat(2 << 20);
            response.headers_mut().insert(
                "x-huge",
                HeaderValue::from_str(&huge).expect("a header value"),
            );
            response
        }
        other => panic!("unknown test fault {other:?}"),
    })
}
