//! The DNS front door, queries/s at 9 clusters, side by side with a baseline that
//! answers every query with one fixed A record through the same hickory-server
//! path (decode, handler, encode, socket): the difference is what fedwasm's lookup
//! costs (client location, table index, ranking, records).
//!
//! The table is synthetic: the nine clusters of the original walk-through
//! (`gce-{asia-east1,europe-west1,us-central1}-{zones}`), `SERVICES` federated
//! Services each on all nine, ranked for three client networks and the unknown
//! location; clients on 127.1.0.0/16 are in Asia.
//!
//! 1. In process, one thread: the pure [`answer`] function; the handler on an
//!    encoded query (decode + answer + encode); the fixed-answer handler.
//! 2. Over UDP on 127.0.0.1: both servers in one tokio runtime of `WORKERS`
//!    threads, loaded in turn by `dnsperf` (Debian's `dnsperf`; skipped when it is
//!    missing) from 127.1.0.1, `ROUNDS` rounds in alternating order, median shown.
//!
//! `cargo bench -p fedwasm-host --bench dns`. Settings, from the environment:
//!
//! | variable | default | what |
//! | --- | --- | --- |
//! | `FEDWASM_BENCH_WORKERS` | 1 | the servers' tokio worker threads (dnsperf needs a core too) |
//! | `FEDWASM_BENCH_DURATION` | 10 | seconds per dnsperf run |
//! | `FEDWASM_BENCH_ROUNDS` | 3 | rounds of (fedwasm, baseline) |
//! | `FEDWASM_BENCH_CLIENTS` | 8 | dnsperf `-c` |
//! | `FEDWASM_BENCH_OUTSTANDING` | 100 | dnsperf `-q` |
//!
//! Without `--bench` (`cargo test --benches`) it is a smoke run: a few in-process
//! queries and one second of each server.

use std::hint::black_box;
use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedwasm_host::dns::{self, answer, DnsConfig, DnsHandler, Index};
use fedwasm_host::routing::{Backend, Locality, Route, RouteKey, RouteKind, ServicePort, Table};
use fedwasm_sdk::{Location, WALKTHROUGH_CLUSTERS};
use hickory_proto::op::{Message, MessageType, Metadata, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

mod common;
use common::env_or;

/// Federated Services in the table.
const SERVICES: usize = 50;

fn location(region: &str, zone: &str) -> Location {
    Location {
        region: region.into(),
        zone: zone.into(),
        position: None,
    }
}

/// `SERVICES` Services `web-<i>` in `shop`, each on the nine clusters (cluster `k`
/// answering 192.0.2.`k+1`), ranked: own region first, then the others.
fn table() -> Table {
    let backends: Vec<Backend> = WALKTHROUGH_CLUSTERS
        .iter()
        .enumerate()
        .map(|(k, (name, region, zone))| Backend {
            addresses: vec![format!("192.0.2.{}", k + 1)],
            ready_replicas: 3,
            capacity: 300,
            ..Backend::serving(name, region, zone)
        })
        .collect();
    let order_for = |region: &str| -> Vec<usize> {
        let mut order: Vec<usize> = (0..backends.len()).collect();
        order.sort_by_key(|i| backends[*i].region != region);
        order
    };
    let rankings = vec![
        (
            location("asia-east1", "asia-east1-a"),
            order_for("asia-east1"),
        ),
        (
            location("europe-west1", "europe-west1-b"),
            order_for("europe-west1"),
        ),
        (
            location("us-central1", "us-central1-a"),
            order_for("us-central1"),
        ),
        (Location::default(), (0..backends.len()).collect()),
    ];
    let routes = (0..SERVICES)
        .map(|i| Route {
            key: RouteKey {
                kind: RouteKind::Service,
                namespace: "shop".into(),
                name: format!("web-{i}"),
                service: format!("web-{i}"),
            },
            rules: Vec::new(),
            ports: vec![ServicePort {
                name: "http".into(),
                port: 80,
                protocol: "TCP".into(),
            }],
            backends: backends.clone(),
            rankings: rankings.clone(),
            plugin: "nearest-healthy".into(),
            error: None,
            problems: Vec::new(),
        })
        .collect();
    let locality = Locality::parse(
        r#"{"clients": [
        {"cidr": "127.1.0.0/16", "region": "asia-east1", "zone": "asia-east1-a"},
        {"cidr": "127.2.0.0/16", "region": "us-central1", "zone": "us-central1-a"},
        {"cidr": "127.3.0.0/16", "region": "europe-west1", "zone": "europe-west1-b"}]}"#,
    )
    .expect("the locality table");
    Table {
        routes,
        locality: Arc::new(locality),
    }
}

/// The baseline: every query answered with one A record, no lookup at all.
struct Fixed {
    record: Record,
}

#[async_trait::async_trait]
impl RequestHandler for Fixed {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = true;
        let response = MessageResponseBuilder::new(&request.queries, None).build(
            metadata,
            std::iter::once(&self.record),
            std::iter::empty(),
            std::iter::empty(),
            std::iter::empty(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(_) => {
                let mut metadata =
                    Metadata::new(request.metadata.id, MessageType::Response, OpCode::Query);
                metadata.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

fn fixed() -> Fixed {
    Fixed {
        record: Record::from_rdata(
            Name::from_ascii("web-0.shop.svc.clusterset.local.").unwrap(),
            5,
            RData::A(A::new(192, 0, 2, 1)),
        ),
    }
}

fn handler(table: Arc<Table>) -> DnsHandler {
    let zones = DnsConfig::default().zones().expect("zones");
    DnsHandler::new(zones, Arc::new(move || table.clone()), None)
}

fn query_bytes(i: usize) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = i as u16;
    m.add_query(Query::query(
        Name::from_ascii(format!("web-{}.shop.svc.clusterset.local.", i % SERVICES)).unwrap(),
        RecordType::A,
    ));
    m.to_vec().unwrap()
}

/// Calls `f` `n` times; returns calls per second.
fn rate(n: usize, mut f: impl FnMut(usize)) -> f64 {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn in_process(calls: usize) {
    let table = Arc::new(table());
    let index = Index::new(table.clone());
    let zones = DnsConfig::default().zones().unwrap();
    let asia = location("asia-east1", "asia-east1-a");
    let names: Vec<Name> = (0..SERVICES)
        .map(|i| Name::from_ascii(format!("web-{i}.shop.svc.clusterset.local.")).unwrap())
        .collect();
    // Every answer is the Asian shard.
    let a = answer(&zones, &index, &names[7], RecordType::A, &asia);
    assert_eq!(a.answers[0].data.to_string(), "192.0.2.1");
    let pure = rate(calls, |i| {
        black_box(answer(
            &zones,
            &index,
            &names[i % SERVICES],
            RecordType::A,
            &asia,
        ));
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let h = handler(table);
    let baseline = fixed();
    let queries: Vec<Vec<u8>> = (0..SERVICES).map(query_bytes).collect();
    let src = SocketAddr::new(IpAddr::from([127, 1, 0, 1]), 5353);
    let check = rt
        .block_on(dns::respond(&h, &queries[3], src))
        .expect("an answer");
    let check = Message::from_vec(&check).unwrap();
    assert_eq!(check.answers[0].data.to_string(), "192.0.2.1", "{check:?}");
    let full = rate(calls, |i| {
        black_box(rt.block_on(dns::respond(&h, &queries[i % SERVICES], src)));
    });
    let base = rate(calls, |i| {
        black_box(rt.block_on(dns::respond(&baseline, &queries[i % SERVICES], src)));
    });
    println!("in process, one thread, {calls} queries each (9 clusters, {SERVICES} Services):");
    println!(
        "  answer() alone                         {:>10.0} /s  {:>6.2} µs",
        pure,
        1e6 / pure
    );
    println!(
        "  fedwasm handler (decode+answer+encode) {:>10.0} /s  {:>6.2} µs",
        full,
        1e6 / full
    );
    println!(
        "  fixed-answer handler (baseline)        {:>10.0} /s  {:>6.2} µs",
        base,
        1e6 / base
    );
    println!(
        "  ratio fedwasm / baseline               {:>10.2}x",
        base / full
    );
}

/// One dnsperf run: (queries/s, average latency in ms, queries lost).
fn dnsperf(port: u16, file: &std::path::Path, seconds: u64) -> Option<(f64, f64, u64)> {
    let clients: u32 = env_or("FEDWASM_BENCH_CLIENTS", 8);
    let outstanding: u32 = env_or("FEDWASM_BENCH_OUTSTANDING", 100);
    let out = Command::new("dnsperf")
        .args(["-s", "127.0.0.1", "-a", "127.1.0.1"])
        .args(["-p", &port.to_string()])
        .args(["-d", &file.display().to_string()])
        .args(["-l", &seconds.to_string()])
        .args(["-c", &clients.to_string()])
        .args(["-q", &outstanding.to_string()])
        .args(["-t", "2"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| -> Option<String> {
        let line = text.lines().find(|l| l.trim_start().starts_with(label))?;
        Some(
            line.split(':')
                .nth(1)?
                .split_whitespace()
                .next()?
                .to_string(),
        )
    };
    let qps: f64 = field("Queries per second")?.parse().ok()?;
    let latency: f64 = field("Average Latency (s)")?.parse().ok()?;
    let lost: u64 = field("Queries lost")?.parse().ok()?;
    Some((qps, latency * 1e3, lost))
}

fn over_udp(seconds: u64, rounds: usize) {
    if Command::new("dnsperf").arg("-h").output().is_err() {
        println!("over UDP: skipped, no dnsperf (apt-get install dnsperf)");
        return;
    }
    let workers: usize = env_or("FEDWASM_BENCH_WORKERS", 1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    let (fed_port, base_port) = rt.block_on(async {
        let (udp, tcp) = dns::bind("127.0.0.1:0").await.unwrap();
        let fed_port = udp.local_addr().unwrap().port();
        dns::serve(udp, tcp, handler(Arc::new(table())), std::future::pending());
        let (udp, tcp) = dns::bind("127.0.0.1:0").await.unwrap();
        let base_port = udp.local_addr().unwrap().port();
        let mut server = hickory_server::Server::new(fixed());
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(10), 32);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        (fed_port, base_port)
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("queries.txt");
    let lines: String = (0..SERVICES)
        .map(|i| format!("web-{i}.shop.svc.clusterset.local A\n"))
        .collect();
    std::fs::write(&file, lines).unwrap();
    println!(
        "over UDP, dnsperf from 127.1.0.1 (Asia), {seconds} s per run, servers on {workers} tokio worker(s):"
    );
    println!("  round  fedwasm q/s  (avg ms, lost)   baseline q/s  (avg ms, lost)");
    let mut fed = Vec::new();
    let mut base = Vec::new();
    for round in 0..rounds {
        let run = |port| dnsperf(port, &file, seconds).expect("dnsperf ran");
        let (f, b) = if round % 2 == 0 {
            let f = run(fed_port);
            (f, run(base_port))
        } else {
            let b = run(base_port);
            (run(fed_port), b)
        };
        println!(
            "  {:>5}  {:>11.0}  ({:>6.3}, {:>4})  {:>12.0}  ({:>6.3}, {:>4})",
            round + 1,
            f.0,
            f.1,
            f.2,
            b.0,
            b.1,
            b.2
        );
        fed.push(f.0);
        base.push(b.0);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (f, b) = (median(&mut fed), median(&mut base));
    println!(
        "  median {f:>10.0}                    {b:>12.0}                  ratio {:.2}x",
        b / f
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    if bench {
        in_process(200_000);
        over_udp(
            env_or("FEDWASM_BENCH_DURATION", 10),
            env_or("FEDWASM_BENCH_ROUNDS", 3),
        );
    } else {
        in_process(1_000);
        over_udp(1, 1);
    }
}
