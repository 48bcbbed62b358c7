//! The body of a response from the API server, whichever protocol carried it.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use tower::BoxError;

use super::http2::RecvBody;

/// A response body from the API server, streamed.
pub struct Body(Inner);

enum Inner {
    Http1 {
        body: Incoming,
        ended: bool,
        /// Called once the body was read to its end, which is when an HTTP/1.1 connection can
        /// take another request; a body dropped early leaves the connection to close.
        reusable: Option<Box<dyn FnOnce() + Send>>,
    },
    Http2(RecvBody),
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Http1 { ended, .. } => f.debug_struct("Http1").field("ended", ended).finish(),
            Inner::Http2(body) => body.fmt(f),
        }
    }
}

impl Body {
    /// An HTTP/1.1 body; `reusable` runs when it was read to the end.
    pub(super) fn http1(body: Incoming, reusable: Option<Box<dyn FnOnce() + Send>>) -> Self {
        Self(Inner::Http1 {
            body,
            ended: false,
            reusable,
        })
    }

    /// An HTTP/2 stream's body.
    pub(super) fn http2(body: RecvBody) -> Self {
        Self(Inner::Http2(body))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Inner::Http1 { body, ended, .. } => {
                let frame = ready!(Pin::new(body).poll_frame(cx));
                *ended |= frame.is_none();
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Inner::Http2(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|frame| frame.map(|frame| frame.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Inner::Http1 { body, ended, .. } => *ended || body.is_end_stream(),
            Inner::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Inner::Http1 { body, .. } => body.size_hint(),
            Inner::Http2(body) => body.size_hint(),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let ended = http_body::Body::is_end_stream(self);
        if let Inner::Http1 { reusable, .. } = &mut self.0
            && ended
            && let Some(reusable) = reusable.take()
        {
            reusable();
        }
    }
}
