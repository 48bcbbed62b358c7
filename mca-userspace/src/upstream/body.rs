//! The body of a response from the API server, whichever protocol carried it.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tower::BoxError;

use tokio::time::Sleep;

use super::http2::RecvBody;
use crate::limits::deadline::{Deadline, Expired};

/// A response body from the API server, streamed; it fails once its request's deadline (if
/// any) has passed.
pub struct Body {
    inner: Inner,
    deadline: Option<(Pin<Box<Sleep>>, Expired)>,
    /// Keeps its request counted as in flight to the cluster until the body is dropped.
    in_flight: Option<Entered>,
}

/// How many requests are in flight to one cluster: sent and not yet answered in full.
#[derive(Debug, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more request until the returned guard is dropped.
    pub fn enter(&self) -> Entered {
        self.0.fetch_add(1, Ordering::Relaxed);
        Entered(Arc::clone(&self.0))
    }

    /// How many there are now.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One request counted in an [`InFlight`] gauge until dropped.
#[derive(Debug)]
pub struct Entered(Arc<AtomicUsize>);

impl Drop for Entered {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Inner {
    Http1 {
        body: Incoming,
        ended: bool,
        /// Called once the body was read to its end, which is when an HTTP/1.1 connection can
        /// take another request; a body dropped early leaves the connection to close.
        reusable: Option<Box<dyn FnOnce() + Send>>,
    },
    Http2(RecvBody),
    /// Bytes in memory (a cached document), then what is left of a body they were read from.
    Buffered {
        data: Option<Bytes>,
        rest: Option<Box<Body>>,
    },
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Inner::Http1 { ended, .. } => f.debug_struct("Http1").field("ended", ended).finish(),
            Inner::Http2(body) => body.fmt(f),
            Inner::Buffered { data, rest } => f
                .debug_struct("Buffered")
                .field("data", &data.as_ref().map(Bytes::len))
                .field("rest", rest)
                .finish(),
        }
    }
}

impl Body {
    /// An HTTP/1.1 body; `reusable` runs when it was read to the end.
    pub(super) fn http1(body: Incoming, reusable: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Self::new(Inner::Http1 {
            body,
            ended: false,
            reusable,
        })
    }

    /// An HTTP/2 stream's body.
    pub(super) fn http2(body: RecvBody) -> Self {
        Self::new(Inner::Http2(body))
    }

    /// A body held in memory.
    pub fn buffered(data: Bytes) -> Self {
        Self::new(Inner::Buffered {
            data: Some(data),
            rest: None,
        })
    }

    /// `data`, read from the start of `rest`, then the remainder of `rest`.
    pub fn prefixed(data: Bytes, rest: Body) -> Self {
        Self::new(Inner::Buffered {
            data: Some(data),
            rest: Some(Box::new(rest)),
        })
    }

    fn new(inner: Inner) -> Self {
        Self {
            inner,
            deadline: None,
            in_flight: None,
        }
    }

    /// The body, keeping its request counted in flight until it is dropped.
    pub fn counted(mut self, in_flight: Entered) -> Self {
        self.in_flight = Some(in_flight);
        self
    }

    /// Takes the in-flight count off the body: for an upgraded connection, whose tunnel
    /// outlives the (empty) body of its `101`.
    pub fn take_in_flight(&mut self) -> Option<Entered> {
        self.in_flight.take()
    }

    /// The body, failing with [`Expired`] if it is not over by `deadline`.
    pub(super) fn until(mut self, deadline: Deadline) -> Self {
        let sleep = Box::pin(tokio::time::sleep_until(deadline.at()));
        self.deadline = Some((sleep, deadline.expired()));
        self
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some((sleep, expired)) = &mut self.deadline
            && sleep.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Some(Err((*expired).into())));
        }
        match &mut self.inner {
            Inner::Http1 { body, ended, .. } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                *ended |= frame.is_none();
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Inner::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
            Inner::Buffered { data, rest } => match (data.take(), rest) {
                (Some(data), _) => Poll::Ready(Some(Ok(Frame::data(data)))),
                (None, Some(rest)) => Pin::new(&mut **rest).poll_frame(cx),
                (None, None) => Poll::Ready(None),
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Http1 { body, ended, .. } => *ended || body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
            Inner::Buffered { data, rest } => {
                data.is_none() && rest.as_ref().is_none_or(|rest| rest.is_end_stream())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Http1 { body, .. } => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
            Inner::Buffered { data, rest } => {
                let buffered = data.as_ref().map_or(0, |data| data.len() as u64);
                let rest = rest
                    .as_ref()
                    .map_or_else(|| SizeHint::with_exact(0), |rest| rest.size_hint());
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + buffered);
                if let Some(upper) = rest.upper() {
                    hint.set_upper(upper + buffered);
                }
                hint
            }
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let ended = http_body::Body::is_end_stream(self);
        if let Inner::Http1 { reusable, .. } = &mut self.inner
            && ended
            && let Some(reusable) = reusable.take()
        {
            reusable();
        }
    }
}
