//! exec/attach and port-forward, over every transport clients use:
//!
//! - exec over WebSocket (`v5.channel.k8s.io`, `v4.channel.k8s.io`: kubectl ≥ 1.30, Python);
//! - exec over SPDY/3.1 (`v4.channel.k8s.io`: kubectl with
//!   `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`, older clients);
//! - port-forward over SPDY/3.1 (`portforward.k8s.io`), over SPDY tunnelled in a WebSocket
//!   (`SPDY/3.1+portforward.k8s.io`: kubectl ≥ 1.31), and over plain WebSocket channels
//!   (`v4.channel.k8s.io` with `?ports=`: the Python client).
//!
//! The "container" runs a few fake programs: `echo ARGS`, `cat` (echoes stdin), `false`
//! (exit 1); attaching shows its main process saying hello; every forwarded "port" is an echo
//! server.

use std::collections::HashMap;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::Message;

use super::{
    Body,
    spdy::{self, Event},
    status,
    websocket::{self, Refusal, Socket},
};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// What a fake program does with its input.
struct Program {
    argv: Vec<String>,
    stdin: bool,
}

impl Program {
    fn from_query(request: &Request<Incoming>) -> Self {
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .into_owned()
                .collect();
        Self {
            argv: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: pairs
                .iter()
                .any(|(k, v)| k == "stdin" && (v == "true" || v == "1")),
        }
    }

    /// Whether the program echoes stdin (and so must read it before finishing).
    fn reads_stdin(&self) -> bool {
        self.stdin && self.argv.first().is_some_and(|c| c == "cat")
    }

    /// Output and exit code for programs that do not read stdin.
    fn run(&self) -> (Vec<u8>, Vec<u8>, i32) {
        match self.argv.first().map(String::as_str) {
            Some("echo") => (
                format!("{}\n", self.argv[1..].join(" ")).into_bytes(),
                vec![],
                0,
            ),
            Some("false") => (vec![], vec![], 1),
            Some("cat") => (vec![], vec![], 0),
            Some(other) => (vec![], format!("{other}: not found\n").into_bytes(), 127),
            // attach: the container's main process says hello and exits.
            None => (b"attached to app\n".to_vec(), vec![], 0),
        }
    }
}

/// The v4+ status document on the error channel.
fn exit_status(code: i32) -> Vec<u8> {
    let value = if code == 0 {
        json!({"metadata": {}, "status": "Success"})
    } else {
        json!({"metadata": {}, "status": "Failure",
               "message": format!("command terminated with non-zero exit code: exit status {code}"),
               "reason": "NonZeroExitCode",
               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
    };
    value.to_string().into_bytes()
}

fn offered(request: &Request<Incoming>, name: header::HeaderName) -> Vec<String> {
    request
        .headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect()
}

/// Answers a SPDY upgrade choosing `protocol` if the client offered it.
fn accept_spdy(
    request: &mut Request<Incoming>,
    protocol: &'static str,
) -> Result<(Response<Body>, OnUpgrade), Refusal> {
    if !offered(
        request,
        header::HeaderName::from_static("x-stream-protocol-version"),
    )
    .iter()
    .any(|p| p == protocol)
    {
        return Err(Box::new(status(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "no supported stream protocol offered",
        )));
    }
    let on_upgrade = hyper::upgrade::on(request);
    let mut response = websocket::switching_protocols("SPDY/3.1");
    response.headers_mut().insert(
        "x-stream-protocol-version",
        HeaderValue::from_static(protocol),
    );
    Ok((response, on_upgrade))
}

/// `pods/{name}/exec` and `attach`.
pub fn exec(mut request: Request<Incoming>) -> Response<Body> {
    let program = Program::from_query(&request);
    let upgrade = if websocket::is_websocket(&request) {
        websocket::accept(&mut request, &["v5.channel.k8s.io", "v4.channel.k8s.io"]).map(
            |(response, protocol, on_upgrade)| {
                tokio::spawn(async move {
                    if let Some(socket) = websocket::open(on_upgrade).await {
                        exec_websocket(socket, &protocol, &program).await;
                    }
                });
                response
            },
        )
    } else {
        let streams = expected_streams(&request);
        accept_spdy(&mut request, "v4.channel.k8s.io").map(|(response, on_upgrade)| {
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let _ = exec_spdy(TokioIo::new(upgraded), &program, streams).await;
                }
            });
            response
        })
    };
    upgrade.unwrap_or_else(|refusal| *refusal)
}

async fn exec_websocket(socket: Socket, protocol: &str, program: &Program) {
    let (mut sink, mut stream) = socket.split();
    let frame = |channel: u8, data: &[u8]| {
        let mut bytes = Vec::with_capacity(data.len() + 1);
        bytes.push(channel);
        bytes.extend_from_slice(data);
        Message::Binary(Bytes::from(bytes))
    };
    let code = if program.reads_stdin() {
        // Echo stdin to stdout until the client closes stdin (v5) or the socket.
        while let Some(Ok(message)) = stream.next().await {
            let data = match &message {
                Message::Binary(data) => data.to_vec(),
                Message::Text(text) => text.as_bytes().to_vec(),
                _ => break,
            };
            match data.split_first() {
                Some((&STDIN, rest))
                    if !rest.is_empty() && sink.send(frame(STDOUT, rest)).await.is_err() =>
                {
                    return;
                }
                Some((&CLOSE, [STDIN])) if protocol.starts_with("v5") => break,
                _ => {}
            }
        }
        0
    } else {
        let (stdout, stderr, code) = program.run();
        for (channel, data) in [(STDOUT, stdout), (STDERR, stderr)] {
            if !data.is_empty() && sink.send(frame(channel, &data)).await.is_err() {
                return;
            }
        }
        code
    };
    let _ = sink.send(frame(ERROR, &exit_status(code))).await;
    let _ = sink.send(normal_close()).await;
    // Let the client finish the closing handshake.
    while let Some(Ok(_)) = stream.next().await {}
}

/// The stream types the client will open, from the request's query.
fn expected_streams(request: &Request<Incoming>) -> Vec<&'static str> {
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let on = |key: &str| query.get(key).is_some_and(|v| v == "true" || v == "1");
    let mut streams = vec!["error"];
    for (key, kind) in [
        ("stdin", "stdin"),
        ("stdout", "stdout"),
        ("stderr", "stderr"),
        ("tty", "resize"),
    ] {
        if on(key) {
            streams.push(kind);
        }
    }
    streams
}

async fn exec_spdy<T: AsyncRead + AsyncWrite>(
    io: T,
    program: &Program,
    expected: Vec<&'static str>,
) -> std::io::Result<()> {
    let (read, write) = tokio::io::split(io);
    let (mut reader, mut writer) = (spdy::Reader::new(read), spdy::Writer::new(write));
    let mut streams: HashMap<String, u32> = HashMap::new();
    while !expected.iter().all(|kind| streams.contains_key(*kind)) {
        match reader.next().await? {
            Some(Event::Stream { id, headers }) => {
                writer.reply(id).await?;
                if let Some((_, kind)) = headers.into_iter().find(|(k, _)| k == "streamtype") {
                    streams.insert(kind, id);
                }
            }
            Some(Event::Ping(id)) => writer.pong(id).await?,
            Some(_) => {}
            None => return Ok(()),
        }
    }
    let stdout = streams.get("stdout").copied();
    let code = if program.reads_stdin() {
        let stdin = streams.get("stdin").copied();
        loop {
            match reader.next().await? {
                Some(Event::Data { id, data, fin }) if Some(id) == stdin => {
                    if let Some(out) = stdout.filter(|_| !data.is_empty()) {
                        writer.data(out, &data, false).await?;
                    }
                    if fin {
                        break;
                    }
                }
                Some(Event::Ping(id)) => writer.pong(id).await?,
                Some(Event::GoAway) | None => break,
                Some(_) => {}
            }
        }
        0
    } else {
        let (out, err, code) = program.run();
        if let Some(id) = stdout {
            writer.data(id, &out, false).await?;
        }
        if let Some(&id) = streams.get("stderr") {
            writer.data(id, &err, false).await?;
        }
        code
    };
    for kind in ["stdout", "stderr"] {
        if let Some(&id) = streams.get(kind) {
            writer.data(id, &[], true).await?;
        }
    }
    writer
        .data(streams["error"], &exit_status(code), true)
        .await?;
    // The client closes the connection once it has read everything.
    let drain = async {
        while let Ok(Some(event)) = reader.next().await {
            match event {
                Event::Ping(id) => writer.pong(id).await?,
                Event::GoAway => break,
                _ => {}
            }
        }
        std::io::Result::Ok(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), drain).await;
    writer.go_away().await
}

/// `pods/{name}/portforward`.
pub fn port_forward(mut request: Request<Incoming>) -> Response<Body> {
    if websocket::is_websocket(&request) {
        let ports: Vec<u16> =
            form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
                .filter(|(k, _)| k == "ports")
                .flat_map(|(_, v)| {
                    v.split(',')
                        .filter_map(|p| p.trim().parse().ok())
                        .collect::<Vec<_>>()
                })
                .collect();
        return match websocket::accept(
            &mut request,
            &[
                "SPDY/3.1+portforward.k8s.io",
                "v4.channel.k8s.io",
                "portforward.k8s.io",
            ],
        ) {
            Ok((response, protocol, on_upgrade)) => {
                tokio::spawn(async move {
                    let Some(socket) = websocket::open(on_upgrade).await else {
                        return;
                    };
                    if protocol.starts_with("SPDY/3.1") {
                        let _ = port_forward_spdy(websocket::into_byte_stream(socket)).await;
                    } else {
                        port_forward_channels(socket, &ports).await;
                    }
                });
                response
            }
            Err(refusal) => *refusal,
        };
    }
    match accept_spdy(&mut request, "portforward.k8s.io") {
        Ok((response, on_upgrade)) => {
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let _ = port_forward_spdy(TokioIo::new(upgraded)).await;
                }
            });
            response
        }
        Err(refusal) => *refusal,
    }
}

/// Echoes every data stream back to the client; closes a request's error stream when its
/// data stream ends.
async fn port_forward_spdy<T: AsyncRead + AsyncWrite>(io: T) -> std::io::Result<()> {
    let (read, write) = tokio::io::split(io);
    let (mut reader, mut writer) = (spdy::Reader::new(read), spdy::Writer::new(write));
    let mut data_streams: HashMap<u32, String> = HashMap::new();
    let mut error_streams: HashMap<String, u32> = HashMap::new();
    while let Some(event) = reader.next().await? {
        match event {
            Event::Stream { id, headers } => {
                writer.reply(id).await?;
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|(k, _)| k == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                match header("streamtype").as_str() {
                    "data" => {
                        data_streams.insert(id, header("requestid"));
                    }
                    "error" => {
                        error_streams.insert(header("requestid"), id);
                    }
                    _ => {}
                }
            }
            Event::Data { id, data, fin } => {
                let Some(request) = data_streams.get(&id) else {
                    continue;
                };
                if !data.is_empty() {
                    writer.data(id, &data, false).await?;
                }
                if fin {
                    writer.data(id, &[], true).await?;
                    if let Some(error) = error_streams.remove(request) {
                        writer.data(error, &[], true).await?;
                    }
                }
            }
            Event::Ping(id) => writer.pong(id).await?,
            Event::Reset => {}
            Event::GoAway => break,
        }
    }
    Ok(())
}

/// The WebSocket port-forward protocol: channel 2i carries port i's data, 2i+1 its errors,
/// and each channel opens with the port number (little-endian u16).
async fn port_forward_channels(socket: Socket, ports: &[u16]) {
    let (mut sink, mut stream) = socket.split();
    for (index, port) in ports.iter().enumerate() {
        for channel in [2 * index as u8, 2 * index as u8 + 1] {
            let mut frame = vec![channel];
            frame.extend_from_slice(&port.to_le_bytes());
            if sink
                .send(Message::Binary(Bytes::from(frame)))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    while let Some(Ok(message)) = stream.next().await {
        let data = match message {
            Message::Binary(data) => data,
            Message::Close(_) => break,
            _ => continue,
        };
        if data.len() > 1 && data[0] % 2 == 0 && sink.send(Message::Binary(data)).await.is_err() {
            break;
        }
    }
    let _ = sink.send(normal_close()).await;
}

/// A close frame with status 1000, as the API server sends when a session ends.
fn normal_close() -> Message {
    Message::Close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
        code: tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "".into(),
    }))
}
