//! Just enough of SPDY/3.1 (the framing kubectl's SPDY executor and port-forwarder speak,
//! through moby/spdystream) to serve exec and port-forward in tests: SYN_STREAM in,
//! SYN_REPLY/DATA/PING out, zlib-compressed header blocks with the SPDY/3 dictionary.

use std::io;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u16 = 3;
const FLAG_FIN: u8 = 0x01;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const MAX_FRAME: usize = 1 << 24;

/// The words that open the SPDY/3 header dictionary, each length-prefixed in it.
const DICTIONARY_WORDS: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The raw tail of the SPDY/3 header dictionary.
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410411412\
413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved Permanently\
400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error\
501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec \
00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,\
application/xml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,\
deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 zlib dictionary (draft-mbelshe-httpbis-spdy §2.6.10.1).
fn dictionary() -> Vec<u8> {
    let mut dict = Vec::with_capacity(1423);
    for word in DICTIONARY_WORDS {
        dict.extend_from_slice(&(word.len() as u32).to_be_bytes());
        dict.extend_from_slice(word.as_bytes());
    }
    dict.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    dict
}

/// What the peer sent, as far as a test server cares.
#[derive(Debug)]
pub enum Event {
    /// A new stream (SYN_STREAM).
    Stream {
        /// Stream id.
        id: u32,
        /// Its headers.
        headers: Vec<(String, String)>,
    },
    /// Data on a stream; `fin` closes the peer's side of it.
    Data {
        /// Stream id.
        id: u32,
        /// Payload.
        data: Bytes,
        /// Whether the peer is done sending on this stream.
        fin: bool,
    },
    /// A PING to answer.
    Ping(u32),
    /// The peer reset a stream.
    Reset,
    /// The peer is going away.
    GoAway,
}

/// Reads frames and decompresses header blocks.
pub struct Reader<R> {
    io: R,
    inflate: Decompress,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Reads from `io`.
    pub fn new(io: R) -> Self {
        Self {
            io,
            inflate: Decompress::new(true),
        }
    }

    /// The next event; `None` at end of stream.
    pub async fn next(&mut self) -> io::Result<Option<Event>> {
        loop {
            let mut head = [0u8; 8];
            match self.io.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                Err(e) => return Err(e),
            }
            let flags = head[4];
            let length = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            if length > MAX_FRAME {
                return Err(invalid("frame too large"));
            }
            let mut payload = vec![0u8; length];
            self.io.read_exact(&mut payload).await?;
            if head[0] & 0x80 == 0 {
                let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                return Ok(Some(Event::Data {
                    id,
                    data: Bytes::from(payload),
                    fin: flags & FLAG_FIN != 0,
                }));
            }
            let kind = u16::from_be_bytes([head[2], head[3]]);
            let word = |at: usize| -> io::Result<u32> {
                payload
                    .get(at..at + 4)
                    .map(|b| u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]))
                    .ok_or_else(|| invalid("short control frame"))
            };
            match kind {
                SYN_STREAM => {
                    let id = word(0)?;
                    let block = payload
                        .get(10..)
                        .ok_or_else(|| invalid("short SYN_STREAM"))?;
                    let headers = self.headers(block)?;
                    return Ok(Some(Event::Stream { id, headers }));
                }
                RST_STREAM => return Ok(Some(Event::Reset)),
                PING => return Ok(Some(Event::Ping(word(0)?))),
                GOAWAY => return Ok(Some(Event::GoAway)),
                // SETTINGS, WINDOW_UPDATE, HEADERS: nothing a test server needs to act on,
                // but a HEADERS block must still go through the shared inflate context.
                8 => {
                    self.headers(payload.get(4..).unwrap_or_default())?;
                }
                _ => {}
            }
        }
    }

    fn headers(&mut self, block: &[u8]) -> io::Result<Vec<(String, String)>> {
        let mut out = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            let before = self.inflate.total_in();
            match self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&dictionary())
                        .map_err(|e| invalid(&e.to_string()))?;
                }
                Err(e) => return Err(invalid(&e.to_string())),
            }
            let consumed = (self.inflate.total_in() - before) as usize;
            input = &input[consumed..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(256));
        }
        parse_header_block(&out)
    }
}

fn parse_header_block(mut block: &[u8]) -> io::Result<Vec<(String, String)>> {
    let take = |block: &mut &[u8]| -> io::Result<String> {
        let len = block
            .get(..4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| invalid("short header block"))?;
        let text = block
            .get(4..4 + len)
            .ok_or_else(|| invalid("short header block"))?;
        let text = String::from_utf8_lossy(text).into_owned();
        *block = &block[4 + len..];
        Ok(text)
    };
    let count = take_u32(&mut block)?;
    (0..count)
        .map(|_| Ok((take(&mut block)?, take(&mut block)?)))
        .collect()
}

fn take_u32(block: &mut &[u8]) -> io::Result<u32> {
    let value = block
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| invalid("short header block"))?;
    *block = &block[4..];
    Ok(value)
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// Writes frames, compressing header blocks.
pub struct Writer<W> {
    io: W,
    deflate: Compress,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    /// Writes to `io`.
    pub fn new(io: W) -> Self {
        let mut deflate = Compress::new(Compression::default(), true);
        deflate
            .set_dictionary(&dictionary())
            .expect("setting the SPDY dictionary on a fresh compressor");
        Self { io, deflate }
    }

    /// Accepts stream `id` (SYN_REPLY with no headers).
    pub async fn reply(&mut self, id: u32) -> io::Result<()> {
        let block = self.compress(&0u32.to_be_bytes())?;
        let mut payload = id.to_be_bytes().to_vec();
        payload.extend_from_slice(&block);
        self.control(SYN_REPLY, 0, &payload).await
    }

    /// Sends `data` on stream `id`; `fin` closes the server's side of the stream.
    pub async fn data(&mut self, id: u32, data: &[u8], fin: bool) -> io::Result<()> {
        let mut frame = Vec::with_capacity(8 + data.len());
        frame.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
        frame.push(if fin { FLAG_FIN } else { 0 });
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(data);
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    /// Answers a PING.
    pub async fn pong(&mut self, id: u32) -> io::Result<()> {
        self.control(PING, 0, &id.to_be_bytes()).await
    }

    /// Says goodbye and closes the connection.
    pub async fn go_away(&mut self) -> io::Result<()> {
        self.control(GOAWAY, 0, &[0; 8]).await?;
        self.io.shutdown().await
    }

    async fn control(&mut self, kind: u16, flags: u8, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(8 + payload.len());
        frame.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
        frame.extend_from_slice(&kind.to_be_bytes());
        frame.push(flags);
        frame.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        frame.extend_from_slice(payload);
        self.io.write_all(&frame).await?;
        self.io.flush().await
    }

    fn compress(&mut self, block: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let before = self.deflate.total_in();
        loop {
            let consumed = (self.deflate.total_in() - before) as usize;
            let status = self
                .deflate
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| invalid(&e.to_string()))?;
            let done = (self.deflate.total_in() - before) as usize == block.len();
            if done && out.len() < out.capacity() || status == Status::StreamEnd {
                return Ok(out);
            }
            out.reserve(256);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        let dict = dictionary();
        assert_eq!(dict.len(), 1423);
        // adler32, the DICTID spdystream puts in its zlib header.
        let (mut a, mut b) = (1u32, 0u32);
        for byte in &dict {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[tokio::test]
    async fn headers_round_trip_through_the_shared_context() {
        let (client, server) = tokio::io::duplex(1 << 16);
        let mut writer = Writer::new(client);
        let mut reader = Reader::new(server);
        for id in [1, 3] {
            // A SYN_STREAM as spdystream writes one: id, assoc id, priority, slot, headers.
            let mut block = 2u32.to_be_bytes().to_vec();
            for text in ["streamtype", "data", "port", "80"] {
                block.extend_from_slice(&(text.len() as u32).to_be_bytes());
                block.extend_from_slice(text.as_bytes());
            }
            let compressed = writer.compress(&block).unwrap();
            let mut payload = u32::to_be_bytes(id).to_vec();
            payload.extend_from_slice(&[0; 6]);
            payload.extend_from_slice(&compressed);
            writer.control(SYN_STREAM, 0, &payload).await.unwrap();
            match reader.next().await.unwrap().unwrap() {
                Event::Stream { id: got, headers } => {
                    assert_eq!(got, id);
                    assert_eq!(
                        headers,
                        [
                            ("streamtype".into(), "data".into()),
                            ("port".into(), "80".into())
                        ]
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        writer.data(3, b"hi", true).await.unwrap();
        assert!(matches!(
            reader.next().await.unwrap(),
            Some(Event::Data {
                id: 3,
                fin: true,
                ..
            })
        ));
    }
}
