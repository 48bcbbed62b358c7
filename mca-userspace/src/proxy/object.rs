//! The metadata of the object a create sends, for routes that decide by its labels (or hash its
//! name): read from at most [`LIMIT`] bytes of the body, which then goes upstream unchanged.
//!
//! A body larger than the limit, or not JSON (protobuf, YAML), cannot be decided on: routing
//! treats its labels as unknown, so label conditions do not hold, and says so in the log.
//! Nothing beyond the limit is ever buffered, the frames read are parsed where they are (no
//! second copy) and held against the process's [`memory::ANSWERS`] until they are
//! forwarded; with the budget spent the request is refused (`429`) rather than misrouted.

use std::{
    collections::VecDeque,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use crate::{
    limits::memory::{self, Held, OverBudget},
    route::ObjectMeta,
    upstream::UpstreamBody,
};

/// How much of a body is read to find the object's metadata: enough for any object etcd takes
/// (1.5 MiB requests) but the largest ConfigMaps and Secrets.
pub const LIMIT: usize = 1 << 20;

/// Why the metadata is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unknown {
    /// The body is larger than [`LIMIT`].
    TooLarge,
    /// The body is not a JSON object with `metadata`.
    NotJson,
    /// Reading the body failed.
    Unreadable,
}

impl Unknown {
    /// For the access log.
    pub fn describe(self) -> &'static str {
        match self {
            Self::TooLarge => "the body is larger than the 1 MiB MCA reads to route by labels",
            Self::NotJson => "the body is not JSON, so its labels cannot be read",
            Self::Unreadable => "reading the body failed",
        }
    }
}

/// Reads the object's metadata from the start of `body`; returns it and the body to forward,
/// which yields the same bytes. Refused when the process holds all it may.
pub async fn read(
    mut body: UpstreamBody,
) -> Result<(Result<ObjectMeta, Unknown>, UpstreamBody), OverBudget> {
    let mut frames = VecDeque::new();
    let mut read = 0;
    let mut held = memory::ANSWERS.hold();
    let outcome = loop {
        match body.frame().await {
            None => break parse(&frames),
            Some(Ok(frame)) => {
                if let Some(chunk) = frame.data_ref() {
                    if read + chunk.remaining() > LIMIT {
                        frames.push_back(frame);
                        break Err(Unknown::TooLarge);
                    }
                    read += chunk.remaining();
                    held.resize(read)?;
                }
                frames.push_back(frame);
            }
            Some(Err(error)) => {
                tracing::debug!(%error, "reading a create's body to route it failed");
                break Err(Unknown::Unreadable);
            }
        }
    };
    let replay = Replay {
        frames,
        rest: Some(body),
        _held: held,
    };
    Ok((outcome, replay.boxed_unsync()))
}

/// The metadata of the JSON object the data `frames` hold, read where they are.
fn parse(frames: &VecDeque<Frame<Bytes>>) -> Result<ObjectMeta, Unknown> {
    #[derive(serde::Deserialize)]
    struct Object {
        #[serde(default)]
        metadata: ObjectMeta,
    }
    let pieces: VecDeque<Bytes> = frames.iter().filter_map(Frame::data_ref).cloned().collect();
    let remaining = pieces.iter().map(Bytes::len).sum();
    let reader = Chunks { pieces, remaining }.reader();
    serde_json::from_reader::<_, Object>(reader)
        .map(|object| object.metadata)
        .map_err(|_| Unknown::NotJson)
}

/// Bytes in pieces (handles on the frames, not copies), read in order without joining them.
struct Chunks {
    pieces: VecDeque<Bytes>,
    remaining: usize,
}

impl Buf for Chunks {
    fn remaining(&self) -> usize {
        self.remaining
    }

    fn chunk(&self) -> &[u8] {
        self.pieces.front().map_or(&[], |first| first.as_ref())
    }

    fn advance(&mut self, mut count: usize) {
        while count > 0 {
            let Some(first) = self.pieces.front_mut() else {
                return;
            };
            let step = count.min(first.len());
            first.advance(step);
            self.remaining -= step;
            count -= step;
            if first.is_empty() {
                self.pieces.pop_front();
            }
        }
    }
}

/// The frames already read, then the rest of the body.
struct Replay {
    frames: VecDeque<Frame<Bytes>>,
    rest: Option<UpstreamBody>,
    /// What the frames hold of the budget, given back when the body is done.
    _held: Held,
}

impl Body for Replay {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(frame) = self.frames.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn body(chunks: Vec<&'static [u8]>) -> UpstreamBody {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(chunk))));
        StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
    }

    async fn collect(body: UpstreamBody) -> Bytes {
        body.collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn reads_labels_and_name_and_forwards_the_same_bytes() {
        let json: &[&'static [u8]] = &[
            br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"settings","#,
            br#""labels":{"tier":"web"}},"data":{"a":"b"}}"#,
        ];
        let (meta, forwarded) = read(body(json.to_vec())).await.unwrap();
        let meta = meta.unwrap();
        assert_eq!(meta.name.as_deref(), Some("settings"));
        assert_eq!(meta.labels["tier"], "web");
        assert_eq!(collect(forwarded).await, json.concat());
    }

    #[tokio::test]
    async fn unknown_when_too_large_or_not_json_and_still_forwarded_whole() {
        static BIG: [u8; LIMIT] = [b' '; LIMIT];
        let (meta, forwarded) = read(body(vec![b"{\"metadata\":{}}", &BIG, b"tail"]))
            .await
            .unwrap();
        assert_eq!(meta, Err(Unknown::TooLarge));
        assert_eq!(collect(forwarded).await.len(), 15 + LIMIT + 4);

        let (meta, forwarded) = read(body(vec![b"kind: ConfigMap\n"])).await.unwrap();
        assert_eq!(meta, Err(Unknown::NotJson));
        assert_eq!(collect(forwarded).await, "kind: ConfigMap\n");

        let empty = Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed_unsync();
        let (meta, _) = read(empty).await.unwrap();
        assert_eq!(meta, Err(Unknown::NotJson));
    }
}
