//! A merged LIST (no `limit`) answered as its clusters' lists stream in: every cluster is
//! asked at once; once each has answered or failed the response starts, and each cluster's
//! items (or rows) are passed on, annotated with their cluster, one at a time in cluster
//! order, as [`scan`](super::scan) splits them out of its body. Nothing holds a whole list,
//! so MCA's memory does not grow with the lists' size (a cluster's waiting body is held
//! back by HTTP/2 flow control).
//!
//! The merged object's other members come after its items: `kind`, `apiVersion`, a Table's
//! `columnDefinitions` (with the `Cluster` column) and the `metadata` with the composite
//! `resourceVersion`, which is known only once every cluster's list has been read. JSON
//! members have no order, and clients decode the whole object.
//!
//! A cluster whose body fails after its answer began would leave a list with some of its
//! objects and not others: the response is then aborted (the client sees a failed request,
//! as from an API server whose stream broke), never ended as if complete.

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{
    Body, Refusal, SNAPSHOTS, TIMEOUT, cluster_request,
    held::{self, Kept, MAX_SNAPSHOTS},
    list_key, merge, none_answered,
    token::Versions,
    version_for, warn_missing,
};
use crate::{cluster::Cluster, upstream};

/// The largest single object (or row) a cluster's list may hold.
const ITEM_LIMIT: usize = 16 << 20;
/// How much of the merged answer is gathered before it is sent on.
const CHUNK: usize = 64 << 10;

/// One cluster whose list is streaming in.
struct Answered {
    cluster: String,
    body: upstream::Body,
}

/// Serves the merged LIST of `head` (no `limit`) from `clusters`.
pub async fn list(
    clusters: &[&Cluster],
    head: &http::request::Parts,
    accept: &str,
    composite: Option<&Versions>,
    plain: Option<&str>,
) -> Result<Response<Body>, Refusal> {
    let opened = futures_util::future::join_all(clusters.iter().map(|cluster| {
        let version = version_for(cluster.name(), composite, plain);
        let request = cluster_request(head, accept, version, None, false);
        async move {
            tokio::time::timeout(TIMEOUT, cluster.open_read(request))
                .await
                .unwrap_or_else(|_| {
                    Err((
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("no answer within {TIMEOUT:?}"),
                    ))
                })
        }
    }))
    .await;
    let mut answered = Vec::new();
    let mut missing = Vec::new();
    for (cluster, opened) in clusters.iter().zip(opened) {
        match opened {
            Ok(response) => answered.push(Answered {
                cluster: cluster.name().to_string(),
                body: response.into_body(),
            }),
            Err(why) => missing.push((cluster.name().to_string(), why)),
        }
    }
    if answered.is_empty() {
        return Err(none_answered(&missing));
    }
    let table = accept.contains("as=Table");
    let key = list_key(head, accept, String::new());
    let (sender, receiver) = mpsc::channel::<Result<Bytes, tower::BoxError>>(8);
    tokio::spawn(async move {
        let mut merged = Merged::new(sender, table);
        if let Err(why) = merged.write(answered, key).await {
            tracing::warn!(%why, "a merged list failed while streaming; aborting its response");
            let _ = merged.out.send(Err(why.into())).await;
        }
    });
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        let chunk = receiver.recv().await?;
        Some((chunk.map(Frame::data), receiver))
    });
    let mut response = Response::new(StreamBody::new(stream).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    warn_missing(response.headers_mut(), &missing);
    Ok(response)
}

/// The merged answer being written.
struct Merged {
    out: mpsc::Sender<Result<Bytes, tower::BoxError>>,
    buffer: BytesMut,
    table: bool,
    /// Whether an item was written (the next needs a comma).
    any: bool,
}

/// What a cluster's list said besides its items.
#[derive(Default)]
struct Members {
    kind: Option<Value>,
    api_version: Option<Value>,
    metadata: Option<Value>,
    columns: Option<Value>,
}

impl Merged {
    fn new(out: mpsc::Sender<Result<Bytes, tower::BoxError>>, table: bool) -> Self {
        Self {
            out,
            buffer: BytesMut::with_capacity(CHUNK),
            table,
            any: false,
        }
    }

    /// Writes every cluster's items, then the merged object's other members; records the
    /// list for the watch that may follow it.
    async fn write(
        &mut self,
        answered: Vec<Answered>,
        mut key: held::ListKey,
    ) -> Result<(), String> {
        let field = if self.table { "rows" } else { "items" };
        self.buffer
            .extend_from_slice(format!("{{\"{field}\":[").as_bytes());
        let mut first = Members::default();
        let mut versions = Versions::default();
        let mut snapshots = Vec::new();
        let mut kept_total = 0;
        for Answered { cluster, mut body } in answered {
            let mut members = Members::default();
            let mut kept = Vec::new();
            let mut scanner = super::scan::Scanner::new(ITEM_LIMIT);
            let mut pieces = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| format!("cluster {cluster}: {error}"))?;
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                scanner
                    .feed(&data, &mut pieces)
                    .map_err(|why| format!("cluster {cluster}: {why}"))?;
                for piece in pieces.drain(..) {
                    self.piece(piece, &cluster, &mut members, &mut kept, &mut kept_total)
                        .await?;
                }
            }
            scanner
                .finish()
                .map_err(|why| format!("cluster {cluster}: {why}"))?;
            if let Some(version) = members
                .metadata
                .as_ref()
                .and_then(|m| m["resourceVersion"].as_str())
            {
                versions.0.insert(cluster.clone(), version.to_owned());
            }
            if kept_total <= MAX_SNAPSHOTS {
                snapshots.push((cluster, kept));
            }
            first.kind = first.kind.or(members.kind);
            first.api_version = first.api_version.or(members.api_version);
            first.metadata = first.metadata.or(members.metadata);
            if first
                .columns
                .as_ref()
                .is_none_or(|c| c.as_array().is_none_or(Vec::is_empty))
            {
                first.columns = members.columns.or(first.columns);
            }
        }
        let mut tail = json!({
            "kind": first.kind.unwrap_or(Value::Null),
            "apiVersion": first.api_version.unwrap_or(Value::Null),
        });
        let mut metadata = first
            .metadata
            .filter(Value::is_object)
            .unwrap_or_else(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            // A cluster's paging and counts mean nothing for the merged list.
            metadata.remove("continue");
            metadata.remove("remainingItemCount");
        }
        metadata["resourceVersion"] = json!(versions.encode());
        tail["metadata"] = metadata;
        if self.table {
            let mut columns =
                json!({"columnDefinitions": first.columns.unwrap_or_else(|| json!([]))});
            merge::add_cluster_column(&mut columns);
            tail["columnDefinitions"] = columns["columnDefinitions"].take();
        }
        // `{"kind":...}` without its braces follows the items.
        let tail = tail.to_string();
        self.buffer.extend_from_slice(b"],");
        self.buffer.extend_from_slice(&tail.as_bytes()[1..]);
        self.flush().await?;
        if kept_total <= MAX_SNAPSHOTS {
            key.version = versions.encode();
            let count = snapshots.len();
            for (index, (cluster, kept)) in snapshots.into_iter().enumerate() {
                SNAPSHOTS.record(&key, &cluster, kept, index + 1 == count);
            }
        }
        Ok(())
    }

    /// Passes one piece of `cluster`'s list on: an item annotated, another member kept.
    async fn piece(
        &mut self,
        piece: super::scan::Piece,
        cluster: &str,
        members: &mut Members,
        kept: &mut Vec<Kept>,
        kept_total: &mut usize,
    ) -> Result<(), String> {
        let parse = |raw: &[u8]| {
            serde_json::from_slice::<Value>(raw).map_err(|e| format!("cluster {cluster}: {e}"))
        };
        match piece {
            super::scan::Piece::Item(raw) => {
                if std::mem::replace(&mut self.any, true) {
                    self.buffer.extend_from_slice(b",");
                }
                let keep = *kept_total <= MAX_SNAPSHOTS;
                if self.table {
                    let mut row = parse(&raw)?;
                    if keep {
                        kept.extend(held::entry_of(&row, true));
                    }
                    merge::mark_row(&mut row, cluster);
                    serde_json::to_writer(bytes::BufMut::writer(&mut self.buffer), &row)
                        .expect("JSON values serialize");
                } else {
                    let out = bytes::BufMut::writer(&mut self.buffer);
                    let object = merge::annotate_raw(&raw, cluster, out)
                        .map_err(|e| format!("cluster {cluster}: {e}"))?;
                    if keep {
                        kept.extend(object.as_ref().and_then(held::entry_of_object));
                    }
                }
                if keep {
                    *kept_total += 1;
                }
                if self.buffer.len() >= CHUNK {
                    self.flush().await?;
                }
            }
            super::scan::Piece::Field(key, raw) => match key.as_str() {
                "kind" => members.kind = Some(parse(&raw)?),
                "apiVersion" => members.api_version = Some(parse(&raw)?),
                "metadata" => members.metadata = Some(parse(&raw)?),
                "columnDefinitions" => members.columns = Some(parse(&raw)?),
                _ => {}
            },
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), String> {
        let chunk = self.buffer.split().freeze();
        self.out
            .send(Ok(chunk))
            .await
            .map_err(|_| "the client is gone".to_owned())
    }
}
