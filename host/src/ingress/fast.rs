//! The common case of a client connection, proxied by hand: HTTP/1.1 requests
//! with no body or a small one of a declared length, and no hop-by-hop headers.
//! That is nearly every request a browser, an API client or a load balancer sends.
//!
//! hyper's server and client are general: every request becomes a `HeaderMap`,
//! crosses a channel to the connection that sends it, and comes back through
//! another, and every answer is encoded again header by header. A proxy needs none
//! of that for the common case: it reads a request head, writes it to the cluster
//! with its own headers changed, reads the answer's head and writes it to the
//! client with the cluster's name added, and copies the body as it comes. Here each
//! client connection does that in its own task, on raw connections to the clusters
//! it keeps (at most [`MAX_OPEN`]), with one read and one write per message in the
//! common case.
//!
//! Anything else is hyper's: at the first request that is not for this path (a body
//! sent in chunks or larger than the retry limit, `Expect`, `Upgrade`, HTTP/1.0, a
//! hop-by-hop header, a head that does not parse, …) the connection is handed over
//! with the bytes read so far, and hyper serves it from there on. Routing, retries,
//! capacity, health and metrics are the same on both ([`Tries`]).
//!
//! Answers are relayed as the cluster framed them: a `Content-Length` body, a
//! chunked one (passed through, its chunks followed to find its end) or one that
//! ends when the cluster closes the connection (the client's connection is then
//! closed after it too).

use std::io::Write as _;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::upstream::authority;
use super::{is_hop_by_hop, Connection, Outcome, Refusal, Tries, Verdict, CLUSTER_HEADER};

/// Headers a request or answer may have on this path; a request with more goes to
/// hyper (which answers 431), an answer with more is a failed try.
const MAX_HEADERS: usize = 64;

/// Clusters one client connection keeps a connection to; the least recently used
/// is closed to open another.
const MAX_OPEN: usize = 4;

/// Time to open a connection to a cluster.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// How a client connection left this path.
pub(super) enum End {
    /// Closed (by either side, or after an answer that ends with the connection).
    Closed,
    /// A request this path does not serve: hyper serves the connection from here,
    /// starting with these bytes, read already.
    Hand(BytesMut),
}

/// Request headers this path rewrites or refuses: never copied to the cluster.
enum RequestHeader {
    /// Copied as it is.
    Copy,
    /// Set by the proxy (`Host`, `X-Forwarded-*`) or read for framing and
    /// keep-alive (`Connection`); not copied.
    Own,
    /// Not for this path (hop-by-hop, or a body or protocol change it does not
    /// handle).
    Other,
}

fn request_header(name: &str) -> RequestHeader {
    const OWN: [&str; 5] = [
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "connection",
    ];
    if OWN.iter().any(|h| name.eq_ignore_ascii_case(h)) {
        RequestHeader::Own
    } else if is_hop_by_hop(name) || name.eq_ignore_ascii_case("expect") {
        RequestHeader::Other
    } else {
        RequestHeader::Copy
    }
}

/// A request read whole, ready to go to a cluster.
struct Prepared<'a> {
    tries: Tries<'a>,
    /// Bytes of the client's buffer it took (head and body).
    consumed: usize,
    /// Whether the client asked to close the connection after the answer.
    close: bool,
    /// A `HEAD` request: the answer has no body whatever its headers say.
    head: bool,
}

/// What the client's buffer holds.
enum Parsed<'a> {
    /// Not yet a whole request.
    Incomplete,
    /// A request for hyper.
    Hand,
    /// A whole request the proxy answers itself.
    Refused {
        refusal: Refusal,
        consumed: usize,
        close: bool,
    },
    Ready(Prepared<'a>),
}

/// Reads the request at the start of `buf` and, once it is whole, routes it and
/// writes what the cluster gets into `out`.
fn prepare<'a>(
    own: &'a Connection,
    table: &'a crate::routing::Table,
    buf: &[u8],
    peer: SocketAddr,
    out: &mut Vec<u8>,
) -> Parsed<'a> {
    let max_head = own.state.config.max_header_bytes;
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= max_head => n,
        // Too long, or not HTTP as this path knows it: hyper answers it.
        Ok(httparse::Status::Complete(_)) | Err(_) => return Parsed::Hand,
        Ok(httparse::Status::Partial) if buf.len() > max_head => return Parsed::Hand,
        Ok(httparse::Status::Partial) => return Parsed::Incomplete,
    };
    let (Some(method), Some(target), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Hand;
    };
    if !target.starts_with('/') {
        return Parsed::Hand;
    }
    let mut host = None;
    let mut forwarded_for = None;
    let mut length: Option<usize> = None;
    let mut close = false;
    for h in request.headers.iter() {
        match request_header(h.name) {
            RequestHeader::Copy if h.name.eq_ignore_ascii_case("content-length") => {
                let Some(n) = std::str::from_utf8(h.value)
                    .ok()
                    .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|v| v.parse::<usize>().ok())
                else {
                    return Parsed::Hand;
                };
                if length.is_some_and(|m| m != n) {
                    return Parsed::Hand;
                }
                length = Some(n);
            }
            RequestHeader::Copy => {}
            RequestHeader::Other => return Parsed::Hand,
            RequestHeader::Own => {
                let Ok(value) = std::str::from_utf8(h.value) else {
                    return Parsed::Hand;
                };
                match h.name.len() {
                    4 if host.is_none() => host = Some(value),
                    4 => return Parsed::Hand,
                    15 if h.name.eq_ignore_ascii_case("x-forwarded-for") => {
                        forwarded_for = forwarded_for.or(Some(value))
                    }
                    10 => {
                        // Only the two tokens that name no other header.
                        if value.eq_ignore_ascii_case("close") {
                            close = true;
                        } else if !value.eq_ignore_ascii_case("keep-alive") {
                            return Parsed::Hand;
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    let Some(host) = host else {
        return Parsed::Hand;
    };
    let body = length.unwrap_or(0);
    if body > own.state.config.retry_body_limit {
        return Parsed::Hand;
    }
    if buf.len() < head_len + body {
        return Parsed::Incomplete;
    }
    let consumed = head_len + body;
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let table_lookup = Tries::new(own, table, method, host, path, peer, forwarded_for);
    let (tries, client) = match table_lookup {
        Ok(found) => found,
        Err(refusal) => {
            return Parsed::Refused {
                refusal,
                consumed,
                close,
            }
        }
    };
    out.clear();
    for part in [method, " ", target, " HTTP/1.1\r\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    for h in request.headers.iter() {
        if matches!(request_header(h.name), RequestHeader::Copy) {
            put_header(out, h.name.as_bytes(), h.value);
        }
    }
    put_header(out, b"host", host.as_bytes());
    out.extend_from_slice(b"x-forwarded-for: ");
    if let Some(prior) = forwarded_for {
        out.extend_from_slice(prior.as_bytes());
        out.extend_from_slice(b", ");
    }
    let _ = write!(out, "{client}\r\n");
    put_header(out, b"x-forwarded-proto", b"http");
    put_header(out, b"x-forwarded-host", host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&buf[head_len..consumed]);
    Parsed::Ready(Prepared {
        tries,
        consumed,
        close,
        head: method == "HEAD",
    })
}

fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The proxy's own answer, as [`super::reply`] gives it on hyper's path.
fn refusal_bytes(refusal: &Refusal, close: bool) -> Vec<u8> {
    let status = refusal.status;
    let body = format!("{}\n", refusal.message);
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n{}\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

/// Serves `stream`'s requests for as long as they are for this path.
pub(super) async fn serve(own: &Connection, stream: &mut TcpStream, peer: SocketAddr) -> End {
    let mut input = BytesMut::with_capacity(8192);
    let mut clusters = Clusters::default();
    let mut request = Vec::with_capacity(1024);
    let mut answer = Vec::with_capacity(1024);
    loop {
        // Read until a whole request is in. The table is the one in effect when
        // it is: a kept-alive connection may wait long for its next request.
        let mut table;
        let prepared = loop {
            if !input.is_empty() {
                table = own.state.router.table();
                match prepare(own, &table, &input, peer, &mut request) {
                    Parsed::Incomplete => {}
                    Parsed::Hand => return End::Hand(input),
                    Parsed::Refused {
                        refusal,
                        consumed,
                        close,
                    } => {
                        input.advance(consumed);
                        let bytes = refusal_bytes(&refusal, close);
                        if stream.write_all(&bytes).await.is_err() || close {
                            let _ = stream.shutdown().await;
                            return End::Closed;
                        }
                        continue;
                    }
                    Parsed::Ready(p) => break p,
                }
            }
            input.reserve(4096);
            match stream.read_buf(&mut input).await {
                Ok(0) | Err(_) => return End::Closed,
                Ok(_) => {}
            }
        };
        let Prepared {
            mut tries,
            consumed,
            close,
            head,
        } = prepared;
        input.advance(consumed);
        let busy = own.clock.busy();
        let mut relayed = None;
        while let Some(attempt) = tries.next() {
            let deadline = attempt.started + own.state.config.response_timeout;
            let exchange = clusters.exchange(
                attempt.endpoint,
                &request,
                tries.retry_any,
                head,
                &mut answer,
            );
            let (outcome, received) = match own.clock.within(deadline, exchange).await {
                Some(Ok(received)) => (Outcome::Answered(received.status), Some(received)),
                Some(Err(failure)) => (failure, None),
                None => (Outcome::TimedOut, None),
            };
            match (tries.settle(&attempt, outcome, true), received) {
                (Verdict::Deliver, Some(received)) => {
                    relayed = Some(
                        relay(
                            &mut clusters,
                            received,
                            attempt.cluster,
                            stream,
                            &mut answer,
                            close,
                        )
                        .await,
                    );
                    break;
                }
                (Verdict::Stop, _) => break,
                _ => {}
            }
        }
        let keep = match relayed {
            Some(keep) => keep,
            None => {
                let refusal = tries.give_up();
                let bytes = refusal_bytes(&refusal, close);
                stream.write_all(&bytes).await.is_ok() && !close
            }
        };
        drop(busy);
        if !keep {
            let _ = stream.shutdown().await;
            return End::Closed;
        }
    }
}

/// How an answer's body ends.
enum Framing {
    /// It has none.
    Empty,
    /// After this many more bytes.
    Length(u64),
    /// At the last chunk and its trailers.
    Chunked(Chunks),
    /// When the cluster closes the connection.
    Close,
}

impl Framing {
    /// How many bytes at the start of `data` belong to the body, and whether the
    /// body ends with them.
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), &'static str> {
        match self {
            Framing::Empty => Ok((0, true)),
            Framing::Length(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                Ok((n as usize, *left == 0))
            }
            Framing::Chunked(chunks) => chunks.take(data),
            Framing::Close => Ok((data.len(), false)),
        }
    }
}

/// Where a chunked body is: followed to find its end, passed through unchanged.
#[derive(Debug, PartialEq, Eq)]
enum Chunks {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// In the trailer section after the last chunk.
    Trailers,
}

impl Chunks {
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut at = 0;
        loop {
            let rest = &data[at..];
            match self {
                Chunks::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, 0))) => {
                        at += n;
                        *self = Chunks::Trailers;
                    }
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        *self = Chunks::Data(size);
                    }
                    Ok(httparse::Status::Partial) => return Ok((at, false)),
                    Err(_) => return Err("a bad chunk size"),
                },
                Chunks::Data(left) => {
                    let n = (*left).min(rest.len() as u64);
                    at += n as usize;
                    *left -= n;
                    if *left > 0 {
                        return Ok((at, false));
                    }
                    *self = Chunks::DataEnd;
                }
                Chunks::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        *self = Chunks::Size;
                    }
                    [] | [b'\r'] => return Ok((at, false)),
                    _ => return Err("a chunk without its line end"),
                },
                Chunks::Trailers => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        at += i + 1;
                        // An empty line ends the trailers, and the body.
                        if rest[..i] == *b"" || rest[..i] == *b"\r" {
                            return Ok((at, true));
                        }
                    }
                    None => return Ok((at, false)),
                },
            }
        }
    }
}

/// A raw connection to a cluster.
struct Upstream {
    endpoint: String,
    stream: TcpStream,
    /// Bytes read from it and not yet relayed.
    input: BytesMut,
}

impl Upstream {
    /// Whether the cluster has closed this idle connection (or sent something
    /// unasked), found without waiting: the event loop's readiness first, a read
    /// only when it says there is something.
    fn is_closed(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// An answer's head, read (what the client gets of it is in the connection's
/// answer buffer); its body is still on the connection.
struct Received {
    status: StatusCode,
    upstream: Upstream,
    framing: Framing,
    /// Whether the connection can take another request after this answer.
    reusable: bool,
}

/// One client connection's connections to clusters, most recently used last.
#[derive(Default)]
struct Clusters {
    idle: Vec<Upstream>,
}

impl Clusters {
    /// Sends `request` to `endpoint` and reads the answer's head into `answer`
    /// (what the client gets of it), on the open connection to it or on a new
    /// one. An open connection the cluster closed while it was idle is found
    /// before it is used (or, when the close crosses the request, by an answer
    /// that never started): the request then goes on a new connection, which
    /// every method may, as the cluster did not take it.
    async fn exchange(
        &mut self,
        endpoint: &str,
        request: &[u8],
        idempotent: bool,
        head: bool,
        answer: &mut Vec<u8>,
    ) -> Result<Received, Outcome> {
        if let Some(i) = self.idle.iter().position(|u| u.endpoint == endpoint) {
            let mut upstream = self.idle.remove(i);
            if !upstream.is_closed() {
                match send(&mut upstream, request, head, answer).await {
                    Ok(received) => return Ok(received.into_received(upstream)),
                    // Closed before it read the request: send it again below.
                    Err(Failure::Unanswered) if idempotent => {}
                    Err(Failure::Unanswered) => {
                        return Err(Outcome::Failed(
                            "the connection closed with the request sent".into(),
                        ))
                    }
                    Err(Failure::Unwritten) => {}
                    Err(Failure::Other(why)) => return Err(Outcome::Failed(why)),
                }
            }
        }
        let mut upstream = connect(endpoint).await.map_err(Outcome::Unsent)?;
        match send(&mut upstream, request, head, answer).await {
            Ok(received) => Ok(received.into_received(upstream)),
            Err(Failure::Unanswered | Failure::Unwritten) => Err(Outcome::Failed(
                "the connection closed before an answer".into(),
            )),
            Err(Failure::Other(why)) => Err(Outcome::Failed(why)),
        }
    }

    /// Keeps `upstream` for the next request to its cluster.
    fn keep(&mut self, upstream: Upstream) {
        if self.idle.len() >= MAX_OPEN {
            self.idle.remove(0);
        }
        self.idle.push(upstream);
    }
}

async fn connect(endpoint: &str) -> Result<Upstream, String> {
    let authority = authority(endpoint).map_err(|e| format!("cannot connect: {e}"))?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&authority))
        .await
        .map_err(|_| format!("cannot connect: no connection in {CONNECT_TIMEOUT:?}"))?
        .map_err(|e| format!("cannot connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    Ok(Upstream {
        endpoint: endpoint.to_string(),
        stream,
        input: BytesMut::with_capacity(8192),
    })
}

/// Why a request got no answer's head.
enum Failure {
    /// The request could not be written.
    Unwritten,
    /// The connection closed with the request written and no byte of an answer.
    Unanswered,
    /// Anything else; the reason.
    Other(String),
}

/// An answer's head as read, before the connection is attached.
struct Head {
    status: StatusCode,
    framing: Framing,
    reusable: bool,
}

impl Head {
    fn into_received(self, upstream: Upstream) -> Received {
        Received {
            status: self.status,
            upstream,
            framing: self.framing,
            reusable: self.reusable,
        }
    }
}

async fn send(
    upstream: &mut Upstream,
    request: &[u8],
    head: bool,
    answer: &mut Vec<u8>,
) -> Result<Head, Failure> {
    if upstream.stream.write_all(request).await.is_err() {
        return Err(Failure::Unwritten);
    }
    upstream.input.clear();
    loop {
        if !upstream.input.is_empty() {
            match answer_head(&upstream.input, head, answer)? {
                Some((len, None)) => {
                    // 1xx: an interim answer; the final one follows.
                    upstream.input.advance(len);
                    continue;
                }
                Some((len, Some(parsed))) => {
                    upstream.input.advance(len);
                    return Ok(parsed);
                }
                None => {}
            }
            if upstream.input.len() > 64 * 1024 {
                return Err(Failure::Other("an answer head over 64 KiB".into()));
            }
        }
        upstream.input.reserve(8192);
        match upstream.stream.read_buf(&mut upstream.input).await {
            Ok(0) if upstream.input.is_empty() => return Err(Failure::Unanswered),
            Ok(0) => {
                return Err(Failure::Other(
                    "the connection closed in the answer's head".into(),
                ))
            }
            Ok(_) => {}
            Err(e) if upstream.input.is_empty() => {
                tracing::debug!(error = %e, "ingress: a cluster connection failed");
                return Err(Failure::Unanswered);
            }
            Err(e) => return Err(Failure::Other(e.to_string())),
        }
    }
}

/// The answer head at the start of `data`: its length and, for a final answer,
/// how its body is framed, with what the client gets of the head written over
/// `out` (the connection's answer buffer, reused from answer to answer); `None`
/// while it is not whole.
fn answer_head(
    data: &[u8],
    head: bool,
    out: &mut Vec<u8>,
) -> Result<Option<(usize, Option<Head>)>, Failure> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response.parse(data) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(Failure::Other(format!("a bad answer: {e}"))),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code)
        .map_err(|_| Failure::Other(format!("a bad status code {code}")))?;
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Failure::Other("switched protocols unasked".into()));
        }
        return Ok(Some((len, None)));
    }
    // Headers the connection's own `Connection` header names are hop-by-hop too.
    let listed: Vec<&str> = response
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut reusable = response.version == Some(1);
    let mut length = None;
    let mut chunked = false;
    out.clear();
    out.reserve(len + 64);
    for part in [
        "HTTP/1.1 ",
        status.as_str(),
        " ",
        response.reason.unwrap_or(""),
        "\r\n",
    ] {
        out.extend_from_slice(part.as_bytes());
    }
    for h in response.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("connection") {
            if listed.iter().any(|t| t.eq_ignore_ascii_case("close")) {
                reusable = false;
            } else if listed.iter().any(|t| t.eq_ignore_ascii_case("keep-alive")) {
                reusable = true;
            }
            continue;
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            let last = std::str::from_utf8(h.value)
                .unwrap_or_default()
                .rsplit(',')
                .next()
                .unwrap_or_default()
                .trim();
            chunked = last.eq_ignore_ascii_case("chunked");
            if !chunked {
                return Err(Failure::Other(
                    "a body in an unknown transfer coding".into(),
                ));
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| Failure::Other("a bad content-length".into()))?;
            if length.is_some_and(|m| m != n) {
                return Err(Failure::Other("two content-lengths".into()));
            }
            length = Some(n);
        } else if is_hop_by_hop(name) // `Transfer-Encoding` is kept above: passed through
            || listed.iter().any(|t| name.eq_ignore_ascii_case(t))
            || name.eq_ignore_ascii_case(CLUSTER_HEADER)
        {
            continue;
        }
        put_header(out, name.as_bytes(), h.value);
    }
    let framing = if head || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if chunked {
        Framing::Chunked(Chunks::Size)
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        reusable = false;
        Framing::Close
    };
    if chunked {
        // `Transfer-Encoding` wins over a `Content-Length`, which is dropped.
        remove_header(out, b"content-length");
    }
    Ok(Some((
        len,
        Some(Head {
            status,
            framing,
            reusable,
        }),
    )))
}

/// Drops every `name:` line from a head being written (rare: only an answer with
/// both `Content-Length` and `Transfer-Encoding`).
fn remove_header(head: &mut Vec<u8>, name: &[u8]) {
    let mut kept = Vec::with_capacity(head.len());
    for line in head.split_inclusive(|&b| b == b'\n') {
        let named = line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':';
        if !named {
            kept.extend_from_slice(line);
        }
    }
    *head = kept;
}

/// Writes the answer to the client, its body as it comes: `answer` holds the
/// head [`answer_head`] wrote for it. Whether the client connection can take
/// another request.
async fn relay(
    clusters: &mut Clusters,
    received: Received,
    cluster: &str,
    client: &mut TcpStream,
    answer: &mut Vec<u8>,
    close: bool,
) -> bool {
    let Received {
        mut upstream,
        mut framing,
        reusable,
        ..
    } = received;
    if cluster.bytes().all(|b| b.is_ascii_graphic()) {
        put_header(answer, CLUSTER_HEADER.as_bytes(), cluster.as_bytes());
    }
    let ends_connection = close || matches!(framing, Framing::Close);
    if ends_connection {
        answer.extend_from_slice(b"connection: close\r\n");
    }
    answer.extend_from_slice(b"\r\n");
    // The head and as much of the body as has come, in one write.
    let mut done = match framing.take(&upstream.input) {
        Ok((n, done)) => {
            answer.extend_from_slice(&upstream.input[..n]);
            upstream.input.advance(n);
            done
        }
        Err(why) => {
            tracing::info!(%cluster, why, "ingress: a cluster's answer broke off");
            return false;
        }
    };
    if client.write_all(answer).await.is_err() {
        return false;
    }
    while !done {
        upstream.input.reserve(16 * 1024);
        match upstream.stream.read_buf(&mut upstream.input).await {
            Ok(0) if matches!(framing, Framing::Close) => {
                done = true;
                continue;
            }
            Ok(0) | Err(_) => {
                // Cut off: the client cannot be told but by closing.
                tracing::info!(%cluster, "ingress: a cluster's answer broke off");
                return false;
            }
            Ok(_) => {}
        }
        let (n, end) = match framing.take(&upstream.input) {
            Ok(taken) => taken,
            Err(why) => {
                tracing::info!(%cluster, why, "ingress: a cluster's answer broke off");
                return false;
            }
        };
        if client.write_all(&upstream.input[..n]).await.is_err() {
            return false;
        }
        upstream.input.advance(n);
        done = end;
    }
    // Bytes past the answer's end were never asked for: not a connection to keep.
    if reusable && upstream.input.is_empty() {
        clusters.keep(upstream);
    }
    !ends_connection
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> Result<(Vec<u8>, bool), &'static str> {
        let mut chunks = Chunks::Size;
        let mut taken = Vec::new();
        let mut pending = Vec::new();
        for part in parts {
            pending.extend_from_slice(part);
            let (n, done) = chunks.take(&pending)?;
            taken.extend_from_slice(&pending[..n]);
            pending.drain(..n);
            if done {
                return Ok((taken, true));
            }
        }
        Ok((taken, false))
    }

    #[test]
    fn a_chunked_body_ends_after_its_trailers_in_any_split() {
        let body: &[u8] =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-sum: 1\r\n\r\n";
        for split in 0..body.len() {
            for second in split..body.len() {
                let (taken, done) =
                    chunked(&[&body[..split], &body[split..second], &body[second..]]).unwrap();
                assert!(done, "split at {split} and {second}");
                assert_eq!(taken, body);
            }
        }
        let (taken, done) = chunked(&[b"0\r\n\r\nGET / HTTP/1.1\r\n"]).unwrap();
        assert!(done);
        assert_eq!(taken, b"0\r\n\r\n", "bytes past the end are not the body's");
        assert_eq!(
            chunked(&[b"5\r\nhel"]).unwrap(),
            (b"5\r\nhel".to_vec(), false)
        );
        assert!(chunked(&[b"zz\r\n"]).is_err());
        assert!(chunked(&[b"2\r\nabXY"]).is_err());
    }

    #[test]
    fn a_length_counts_down_over_reads() {
        let mut framing = Framing::Length(5);
        assert_eq!(framing.take(b"abc").unwrap(), (3, false));
        assert_eq!(framing.take(b"defg").unwrap(), (2, true));
        assert_eq!(Framing::Empty.take(b"x").unwrap(), (0, true));
        assert_eq!(Framing::Close.take(b"xyz").unwrap(), (3, false));
    }

    /// The head's length, framing, and what the client gets of it.
    fn head_of(answer: &[u8], head: bool) -> (usize, Head, String) {
        // Left over from an earlier answer: written over.
        let mut out = b"HTTP/1.1 503 Stale\r\n".to_vec();
        match answer_head(answer, head, &mut out) {
            Ok(Some((n, Some(h)))) => (n, h, String::from_utf8(out).unwrap()),
            _ => panic!("no final head in {answer:?}"),
        }
    }

    /// Whether the head at the start of `answer` is refused, 1xx, incomplete, ….
    fn scan(answer: &[u8]) -> Result<Option<(usize, Option<Head>)>, Failure> {
        answer_head(answer, false, &mut Vec::new())
    }

    #[test]
    fn answer_heads_lose_their_hop_by_hop_headers() {
        let raw = b"HTTP/1.1 200 OK\r\nConnection: x-secret, keep-alive\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nx-fedwasm-cluster: forged\r\nContent-Length: 2\r\nX-Kept: 1\r\n\r\nok";
        let (n, h, out) = head_of(raw, false);
        assert_eq!(n, raw.len() - 2);
        assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Kept: 1\r\n");
        assert!(matches!(h.framing, Framing::Length(2)) && h.reusable);
    }

    #[test]
    fn answer_framing_follows_rfc_9112() {
        let (_, h, _) = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true);
        assert!(matches!(h.framing, Framing::Empty), "HEAD has no body");
        let (_, h, _) = head_of(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Empty));
        let (_, h, out) = head_of(
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            false,
        );
        assert!(matches!(h.framing, Framing::Chunked(Chunks::Size)));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n"
        );
        let (_, h, _) = head_of(b"HTTP/1.1 200 OK\r\n\r\n", false);
        assert!(matches!(h.framing, Framing::Close) && !h.reusable);
        let (_, h, _) = head_of(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            false,
        );
        assert!(!h.reusable);
        let (_, h, _) = head_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false);
        assert!(!h.reusable);
        assert!(matches!(
            scan(b"HTTP/1.1 100 Continue\r\n\r\n"),
            Ok(Some((25, None)))
        ));
        assert!(matches!(scan(b"HTTP/1.1 200 OK\r\nContent-"), Ok(None)));
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
        ] {
            assert!(matches!(scan(bad), Err(Failure::Other(_))), "{bad:?}");
        }
    }

    #[test]
    fn which_request_headers_are_rewritten_or_handed_over() {
        assert!(matches!(request_header("Accept"), RequestHeader::Copy));
        assert!(matches!(
            request_header("Content-Length"),
            RequestHeader::Copy
        ));
        assert!(matches!(request_header("HOST"), RequestHeader::Own));
        assert!(matches!(
            request_header("X-Forwarded-For"),
            RequestHeader::Own
        ));
        assert!(matches!(
            request_header("Transfer-Encoding"),
            RequestHeader::Other
        ));
        assert!(matches!(request_header("Expect"), RequestHeader::Other));
    }
}
