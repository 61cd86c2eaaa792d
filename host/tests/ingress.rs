//! The global ingress as a proxy, against real HTTP servers on loopback (no
//! apiserver needed: the routing table is fixed). What a client and a cluster see
//! through it: headers, bodies both ways, connection reuse, failover, timeouts.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fedwasm_host::ingress::{self, IngressConfig, IngressMetrics};
use fedwasm_host::routing::{Backend, Route, Router, Table};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cluster's workload: answers what it saw, and counts the connections it got.
struct Cluster {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

/// `GET /headers`: the request's headers, one `name: value` per line.
/// `POST /echo`: the body back. `GET /close`: answers with `Connection: close`.
/// `GET /slow`: answers after 3 s. `GET /drip`: ten chunks over 1.5 s. Every answer carries hop-by-hop headers the
/// client must not see.
async fn start_cluster(name: &'static str) -> Cluster {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: Request<Incoming>| async move {
                        let path = req.uri().path().to_string();
                        let mut close = false;
                        let body = match path.as_str() {
                            "/headers" => {
                                let mut lines = format!("target: {}\n", req.uri());
                                for (k, v) in req.headers() {
                                    lines
                                        .push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                                }
                                Bytes::from(lines)
                            }
                            "/echo" => req.into_body().collect().await.unwrap().to_bytes(),
                            "/close" => {
                                close = true;
                                Bytes::from(name)
                            }
                            "/slow" => {
                                tokio::time::sleep(Duration::from_secs(3)).await;
                                Bytes::from(name)
                            }
                            "/drip" => return Ok(drip()),
                            _ => Bytes::from(name),
                        };
                        let mut response = Response::new(Full::new(body).boxed());
                        let h = response.headers_mut();
                        h.insert("x-served-by", name.parse().unwrap());
                        h.insert("x-private", "secret".parse().unwrap());
                        h.insert("keep-alive", "timeout=5".parse().unwrap());
                        let connection = if close {
                            "close, x-private"
                        } else {
                            "x-private"
                        };
                        h.insert("connection", connection.parse().unwrap());
                        Ok::<_, Infallible>(response)
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Cluster { addr, connections }
}

type TestBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// `GET /drip`: ten chunks, 150 ms apart.
fn drip() -> Response<TestBody> {
    let chunks = futures::stream::unfold(0u8, |i| async move {
        if i == 10 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        Some((
            Ok::<_, Infallible>(hyper::body::Frame::data(Bytes::from(vec![b'a' + i; 100]))),
            i + 1,
        ))
    });
    Response::new(http_body_util::StreamBody::new(chunks).boxed())
}

/// A port nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The ingress in front of `endpoints`, ranked in this order for every client.
async fn start_ingress(
    endpoints: &[(&str, SocketAddr)],
    config: IngressConfig,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let backends: Vec<Backend> = endpoints
        .iter()
        .map(|(name, addr)| Backend {
            endpoint: Some(format!("http://{addr}")),
            ..Backend::serving(name, "", "")
        })
        .collect();
    let route = Route::everything("shop", "web", backends);
    let router = Router::fixed(Table {
        routes: vec![route],
        locality: Default::default(),
    });
    let metrics = Arc::new(IngressMetrics::new(&prometheus::Registry::new()).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ingress::serve(
        listener,
        router,
        metrics,
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    (addr, stop)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

fn header_lines(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_forwarded_as_a_reverse_proxy_does() {
    let m1 = start_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    let response = client()
        .get(format!("http://{ingress}/headers?q=1"))
        .header("host", "shop.example.com")
        .header("x-forwarded-for", "203.0.113.7")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "must not pass")
        .header("te", "trailers")
        .header("x-kept", "yes")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let h = response.headers();
    assert_eq!(h["x-fedwasm-cluster"], "m1");
    assert_eq!(h["x-served-by"], "m1");
    for hop in ["x-private", "keep-alive"] {
        assert!(!h.contains_key(hop), "{hop} reached the client");
    }
    let seen = header_lines(&response.text().await.unwrap());
    assert_eq!(seen["target"], "/headers?q=1", "{seen:?}");
    assert_eq!(seen["host"], "shop.example.com");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["x-kept"], "yes");
    for hop in ["x-hop", "te"] {
        assert!(
            !seen.contains_key(hop),
            "{hop} reached the cluster: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_are_forwarded_alike_on_the_hand_written_path() {
    // No hop-by-hop header in the request: it takes the hand-written path (the
    // test above, with some, takes hyper's).
    let m1 = start_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    stream
        .write_all(
            b"GET /headers?q=1 HTTP/1.1\r\nHost: shop.example.com\r\nX-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Kept: yes\r\nX-Fedwasm-Cluster: forged\r\n\r\n",
        )
        .await
        .unwrap();
    let (head, body) = read_message(&mut stream, &mut Vec::new(), Duration::from_secs(5))
        .await
        .unwrap();
    let answer = header_lines(&head.to_ascii_lowercase());
    assert_eq!(answer["x-fedwasm-cluster"], "m1");
    assert_eq!(answer["x-served-by"], "m1");
    for hop in ["x-private", "keep-alive", "connection"] {
        assert!(
            !answer.contains_key(hop),
            "{hop} reached the client: {head}"
        );
    }
    let seen = header_lines(&String::from_utf8(body).unwrap());
    assert_eq!(seen["target"], "/headers?q=1", "{seen:?}");
    assert_eq!(seen["host"], "shop.example.com");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example.com");
    assert_eq!(seen["x-kept"], "yes");
    assert_eq!(
        seen["x-fedwasm-cluster"], "forged",
        "a request header is the client's"
    );
    assert_eq!(m1.connections.load(Ordering::SeqCst), 1);
}

/// GETs `path` `times` times on one client connection; the bodies.
async fn gets_on_one_connection(ingress: SocketAddr, path: &str, times: usize) -> Vec<String> {
    let stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut bodies = Vec::new();
    for _ in 0..times {
        sender.ready().await.unwrap();
        let request = Request::get(path)
            .header("host", "shop.example.com")
            .body(http_body_util::Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        bodies.push(String::from_utf8_lossy(&body).to_string());
    }
    bodies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_connection_reuses_one_cluster_connection() {
    let m1 = start_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    let bodies = gets_on_one_connection(ingress, "/", 20).await;
    assert!(bodies.iter().all(|b| b == "m1"), "{bodies:?}");
    assert_eq!(m1.connections.load(Ordering::SeqCst), 1);
    // A cluster that closes its connection after every answer: every request still
    // gets one, on a new connection.
    let bodies = gets_on_one_connection(ingress, "/close", 10).await;
    assert!(bodies.iter().all(|b| b == "m1"), "{bodies:?}");
    assert_eq!(m1.connections.load(Ordering::SeqCst), 11);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let m1 = start_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    // Larger than what is kept for a retry (64 KiB), so it streams.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let r = client()
        .post(format!("http://{ingress}/echo"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap() == big, "the echoed body differs");
    // Chunked, no length given, written by hand.
    let mut stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let mut request =
        b"POST /echo HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
            .to_vec();
    let mut expected = Vec::new();
    for i in 0..50u8 {
        request.extend_from_slice(b"3e8\r\n");
        request.extend_from_slice(&[i; 1000]);
        request.extend_from_slice(b"\r\n");
        expected.extend_from_slice(&[i; 1000]);
    }
    request.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&answer[..split]).to_string();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(answer[split..] == expected[..], "the chunked body differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_that_refuses_connections_is_skipped_for_any_method() {
    let m2 = start_cluster("m2").await;
    let (ingress, _stop) = start_ingress(
        &[("m1", closed_port()), ("m2", m2.addr)],
        IngressConfig::default(),
    )
    .await;
    let client = client();
    let r = client
        .get(format!("http://{ingress}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-fedwasm-cluster"], "m2");
    let r = client
        .post(format!("http://{ingress}/echo"))
        .body("order")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_no_cluster_serves_gets_a_short_reason() {
    let m1 = start_cluster("m1").await;
    let config = IngressConfig {
        response_timeout: Duration::from_millis(300),
        ..IngressConfig::default()
    };
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], config).await;
    let r = client()
        .get(format!("http://{ingress}/slow"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("did not answer in time"));

    let (ingress, _stop) = start_ingress(&[("m1", closed_port())], IngressConfig::default()).await;
    let r = client()
        .get(format!("http://{ingress}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(r.text().await.unwrap().contains("cannot connect"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_connections_over_the_workers_and_then_a_stop() {
    let m1 = start_cluster("m1").await;
    let config = IngressConfig {
        workers: 3,
        ..IngressConfig::default()
    };
    let (ingress, stop) = start_ingress(&[("m1", m1.addr)], config).await;
    let tasks: Vec<_> = (0..24)
        .map(|_| {
            tokio::spawn(async move {
                let client = client();
                for _ in 0..10 {
                    let r = client
                        .get(format!("http://{ingress}/"))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 200);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    // A client connection open (kept alive) when the ingress stops.
    let mut held = tokio::net::TcpStream::connect(ingress).await.unwrap();
    held.write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = held.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let _ = stop.send(());
    // Stopped: that connection is closed, and the listener too.
    let closed = tokio::time::timeout(Duration::from_secs(5), held.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "a client connection outlived the stop: {closed:?}"
    );
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(ingress).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        refused,
        "the ingress still accepts connections after its stop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_header_timeout_closes_idle_and_slow_clients_but_not_slow_answers() {
    let m1 = start_cluster("m1").await;
    let config = IngressConfig {
        header_timeout: Duration::from_millis(400),
        ..IngressConfig::default()
    };
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], config).await;
    let closed_within = |mut stream: tokio::net::TcpStream, limit: Duration| async move {
        let mut buf = [0u8; 4096];
        let started = std::time::Instant::now();
        loop {
            match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                Ok(Ok(_)) => continue,
                Err(_) => return None,
            }
        }
    };
    // A client that sends half a head and stops.
    let mut slow = tokio::net::TcpStream::connect(ingress).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: sh").await.unwrap();
    let took = closed_within(slow, Duration::from_secs(5)).await;
    assert!(took.is_some(), "a half-sent head held its connection open");
    // A kept-alive connection left idle after an answer.
    let mut idle = tokio::net::TcpStream::connect(ingress).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(idle, Duration::from_secs(5)).await;
    assert!(took.is_some(), "an idle connection stayed open");
    // An answer that takes 1.5 s to send is not cut at 0.4 s, and the connection
    // serves the next request.
    let bodies = gets_on_one_connection(ingress, "/drip", 2).await;
    for body in bodies {
        assert_eq!(body.len(), 1000, "a slow answer was cut: {body:?}");
    }
}

/// A cluster written by hand, to answer as servers in the wild do: it closes a
/// kept-alive connection after 100 ms idle (as nginx's `keepalive_timeout` and Go's
/// `IdleTimeout` do, with no `Connection: close`). `/early`: a 103 before the
/// answer. `/until-close`: a body that ends when the connection does. Any other
/// path: its name, with a length (none for `HEAD`). Counts connections.
async fn start_raw_cluster(name: &'static str) -> Cluster {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut input = Vec::new();
                loop {
                    let Some((head, _)) =
                        read_message(&mut stream, &mut input, Duration::from_millis(100)).await
                    else {
                        return;
                    };
                    let line = head.lines().next().unwrap_or_default().to_string();
                    let answer = if line.starts_with("HEAD ") {
                        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n".to_string()
                    } else if line.contains(" /early ") {
                        "HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_string()
                    } else if line.contains(" /until-close ") {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\n\r\nstreamed to the end")
                            .await;
                        return;
                    } else {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{name}",
                            name.len()
                        )
                    };
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Cluster { addr, connections }
}

/// Reads one HTTP message (request or answer) from `stream`, `input` holding what
/// was read past the previous one: its head and its body (by `content-length`, or
/// to the connection's end when it has none and is an answer; none at all for an
/// answer to `HEAD`). `None` when the connection closes or stays silent for `idle`
/// first.
async fn read_message(
    stream: &mut tokio::net::TcpStream,
    input: &mut Vec<u8>,
    idle: Duration,
) -> Option<(String, Vec<u8>)> {
    read_answer(stream, input, idle, false).await
}

async fn read_answer(
    stream: &mut tokio::net::TcpStream,
    input: &mut Vec<u8>,
    idle: Duration,
    to_head: bool,
) -> Option<(String, Vec<u8>)> {
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = input.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => input.extend_from_slice(&buf[..n]),
            _ => return None,
        }
    };
    let head = String::from_utf8_lossy(&input[..head_end]).to_string();
    input.drain(..head_end);
    let lower = head.to_ascii_lowercase();
    let length = lower
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map(|n| n.trim().parse::<usize>().unwrap());
    let body_until_close = lower.starts_with("http/") && length.is_none() && !to_head;
    let wanted = if to_head { 0 } else { length.unwrap_or(0) };
    while input.len() < wanted || body_until_close {
        match tokio::time::timeout(idle, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => input.extend_from_slice(&buf[..n]),
            _ if body_until_close => break,
            _ => return None,
        }
    }
    let body = if body_until_close {
        std::mem::take(input)
    } else {
        input.drain(..wanted).collect()
    };
    Some((head, body))
}

/// Writes `requests` (pipelined: all at once) on `stream` and reads `count`
/// answers, each a 200 from m1: their heads and bodies, in order.
async fn pipelined(
    stream: &mut tokio::net::TcpStream,
    input: &mut Vec<u8>,
    requests: &[u8],
    count: usize,
) -> Vec<(String, String)> {
    stream.write_all(requests).await.unwrap();
    let mut answers = Vec::new();
    for _ in 0..count {
        let (head, body) = read_message(stream, input, Duration::from_secs(5))
            .await
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nx-fedwasm-cluster: m1\r\n"), "{head}");
        answers.push((head, String::from_utf8(body).unwrap()));
    }
    answers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_as_servers_in_the_wild_frame_them() {
    let m1 = start_raw_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    let mut input = Vec::new();
    let wait = Duration::from_secs(5);
    // Three requests written at once: three answers, in order.
    let answers = pipelined(
        &mut stream,
        &mut input,
        b"GET /a HTTP/1.1\r\nhost: shop\r\n\r\nGET /early HTTP/1.1\r\nhost: shop\r\n\r\nPOST /b HTTP/1.1\r\nhost: shop\r\ncontent-length: 5\r\n\r\norder",
        3,
    )
    .await;
    for ((head, body), want) in answers.iter().zip(["m1", "ok", "m1"]) {
        assert!(
            !head.contains("103"),
            "the interim answer reached the client: {head}"
        );
        assert_eq!(body, want);
    }
    // The cluster closed its idle connection meanwhile: the next request, a POST,
    // goes on a new one instead of failing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream
        .write_all(b"POST /c HTTP/1.1\r\nhost: shop\r\ncontent-length: 2\r\n\r\nhi")
        .await
        .unwrap();
    let (head, body) = read_message(&mut stream, &mut input, wait).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert_eq!(body, b"m1");
    assert_eq!(m1.connections.load(Ordering::SeqCst), 2);
    // HEAD: a length and no body; the connection goes on.
    stream
        .write_all(b"HEAD /d HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_answer(&mut stream, &mut input, wait, true)
        .await
        .unwrap();
    assert!(head.contains("content-length: 2\r\n"), "{head}");
    assert!(body.is_empty());
    // A body that ends with the cluster's connection: the client's closes after it.
    stream
        .write_all(b"GET /until-close HTTP/1.1\r\nhost: shop\r\n\r\n")
        .await
        .unwrap();
    let (head, body) = read_message(&mut stream, &mut input, wait).await.unwrap();
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert_eq!(body, b"streamed to the end");
    // The client asking to close: answered, then closed.
    let mut stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    stream
        .write_all(b"GET /e HTTP/1.1\r\nhost: shop\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(wait, stream.read_to_end(&mut all))
        .await
        .expect("the connection stayed open")
        .unwrap();
    let all = String::from_utf8_lossy(&all);
    assert!(
        all.starts_with("HTTP/1.1 200 OK\r\n") && all.ends_with("\r\n\r\nm1"),
        "{all}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_goes_on_after_a_request_of_another_kind() {
    let m1 = start_cluster("m1").await;
    let (ingress, _stop) = start_ingress(&[("m1", m1.addr)], IngressConfig::default()).await;
    let mut stream = tokio::net::TcpStream::connect(ingress).await.unwrap();
    // A plain GET, a chunked POST (not for the hand-written path) and a GET again,
    // pipelined on one connection.
    let answers = pipelined(
        &mut stream,
        &mut Vec::new(),
        b"GET / HTTP/1.1\r\nhost: shop\r\n\r\nPOST /echo HTTP/1.1\r\nhost: shop\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET /headers HTTP/1.1\r\nhost: shop\r\nx-last: 1\r\n\r\n",
        3,
    )
    .await;
    assert_eq!(answers[0].1, "m1");
    assert_eq!(answers[1].1, "abcde");
    assert!(answers[2].1.contains("x-last: 1\n"), "{}", answers[2].1);
    assert_eq!(
        m1.connections.load(Ordering::SeqCst),
        2,
        "one connection per path"
    );
}
