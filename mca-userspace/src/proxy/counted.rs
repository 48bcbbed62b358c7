//! Bodies that count the bytes passing through them into the request's context, as they
//! stream, never by buffering.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use super::context::RequestContext;

/// A byte counter shared between a body and its request's context.
pub type ByteCounter = Arc<AtomicU64>;

pin_project_lite::pin_project! {
    /// A body that counts the data bytes passing through it into `T`: a request body into a
    /// counter shared with its context, a response body into the context it carries, so the
    /// exchange ends when the body is done.
    pub struct Counted<B, T> {
        #[pin]
        inner: B,
        tally: T,
    }
}

/// What a [`Counted`] body counts into.
pub trait Tally {
    /// Counts `bytes` more.
    fn add(&mut self, bytes: u64);
}

impl Tally for ByteCounter {
    fn add(&mut self, bytes: u64) {
        self.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl<B> Counted<B, ByteCounter> {
    /// Counts `inner`'s bytes into `counter`.
    pub fn new(inner: B, counter: ByteCounter) -> Self {
        Self {
            inner,
            tally: counter,
        }
    }
}

impl<B> Counted<B, RequestContext> {
    /// Counts `inner`'s bytes as sent to the client; the exchange ends when it is dropped.
    pub fn response(inner: B, context: RequestContext) -> Self {
        Self {
            inner,
            tally: context,
        }
    }
}

impl<B: Body, T: Tally> Body for Counted<B, T> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            this.tally.add(data.remaining() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    #[tokio::test]
    async fn counts_bytes_and_keeps_the_size_hint() {
        let counter = ByteCounter::default();
        let body = Counted::new(Full::new(Bytes::from_static(b"hello")), counter.clone());
        assert_eq!(body.size_hint().exact(), Some(5));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "hello");
        assert_eq!(counter.load(Ordering::Relaxed), 5);
    }
}
