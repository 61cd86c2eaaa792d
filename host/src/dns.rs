//! The DNS front door: federated Services by name, each client sent to the closest
//! healthy shard, as the routing table ranks them for the client's location.
//!
//! An authoritative-only server on hickory-server, UDP and TCP on one port, inside
//! the host's tokio runtime. Every question is answered from one immutable
//! routing-table snapshot ([`crate::routing::Router::table`]) and an index of it
//! made once per snapshot: no Wasm, no lock, no I/O per query. What is answered is
//! in [`answer`]; this module decodes, locates the client (its source address, or
//! the EDNS Client Subnet option when the query carries one) and encodes.
//!
//! Malformed messages are FORMERR (hickory-server's decoder, or more or fewer than
//! one question here); other opcodes NOTIMP; EDNS versions above 0 BADVERS; classes
//! other than IN and zone transfers REFUSED. Recursion is never offered (RA=0).

mod answer;

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{DNSClass, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder};
use hickory_server::Server;
use prometheus::{IntCounter, IntCounterVec, Opts};

use crate::routing::Table;

pub use answer::{answer, Answer, Index, Zones, CLUSTERSET_ZONE, SCHEMA_VERSION};

/// How `fedwasm run` serves DNS.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Address to answer on (UDP and TCP); none: no DNS.
    pub addr: Option<String>,
    /// The domain of the original Federation names (`--dns-zone`); none: only
    /// `clusterset.local`.
    pub zone: Option<String>,
    /// The federation's name in those names.
    pub federation: String,
    /// TTL of every answer (and the negative-caching TTL).
    pub ttl: Duration,
}

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            addr: None,
            zone: None,
            federation: "federation".into(),
            ttl: Duration::from_secs(5),
        }
    }
}

impl DnsConfig {
    /// The zones this configuration serves; fails on a malformed zone or name.
    pub fn zones(&self) -> Result<Zones, String> {
        Zones::new(self.zone.as_deref(), &self.federation, self.ttl)
    }
}

/// Responses by code: `fedwasm_dns_responses_total{rcode}`.
pub struct DnsMetrics {
    no_error: IntCounter,
    nx_domain: IntCounter,
    refused: IntCounter,
    form_err: IntCounter,
    other: IntCounterVec,
}

impl DnsMetrics {
    /// Registers the DNS metrics with the app's registry.
    pub fn new(registry: &prometheus::Registry) -> Result<Self, prometheus::Error> {
        let responses = IntCounterVec::new(
            Opts::new(
                "fedwasm_dns_responses_total",
                "DNS responses sent, by response code.",
            ),
            &["rcode"],
        )?;
        registry.register(Box::new(responses.clone()))?;
        Ok(Self {
            no_error: responses.with_label_values(&["NOERROR"]),
            nx_domain: responses.with_label_values(&["NXDOMAIN"]),
            refused: responses.with_label_values(&["REFUSED"]),
            form_err: responses.with_label_values(&["FORMERR"]),
            other: responses,
        })
    }

    fn count(&self, code: ResponseCode) {
        match code {
            ResponseCode::NoError => self.no_error.inc(),
            ResponseCode::NXDomain => self.nx_domain.inc(),
            ResponseCode::Refused => self.refused.inc(),
            ResponseCode::FormErr => self.form_err.inc(),
            other => self
                .other
                .with_label_values(&[other.to_str().to_ascii_uppercase().as_str()])
                .inc(),
        }
    }
}

/// Where the handler gets the routing table now.
pub type TableSource = Arc<dyn Fn() -> Arc<Table> + Send + Sync>;

/// Answers every query from the current routing table.
pub struct DnsHandler {
    zones: Zones,
    tables: TableSource,
    /// The index of the last table seen; remade when the table is replaced.
    index: ArcSwap<Index>,
    metrics: Option<DnsMetrics>,
}

impl DnsHandler {
    pub fn new(zones: Zones, tables: TableSource, metrics: Option<DnsMetrics>) -> Self {
        let index = Index::new(tables());
        Self {
            zones,
            tables,
            index: ArcSwap::from_pointee(index),
            metrics,
        }
    }

    /// The index of the table now.
    fn index(&self) -> Arc<Index> {
        let table = (self.tables)();
        let index = self.index.load_full();
        if Arc::ptr_eq(index.table(), &table) {
            return index;
        }
        let fresh = Arc::new(Index::new(table));
        self.index.store(fresh.clone());
        fresh
    }

    async fn send(
        &self,
        request: &Request,
        code: ResponseCode,
        edns: Option<&Edns>,
        mut handle: impl ResponseHandler,
    ) -> ResponseInfo {
        let mut with_high: Edns;
        let mut edns = edns;
        if code.high() != 0 {
            if let Some(e) = edns {
                with_high = e.clone();
                with_high.set_rcode_high(code.high());
                edns = Some(&with_high);
            }
        }
        let response =
            MessageResponseBuilder::new(&request.queries, edns).error_msg(&request.metadata, code);
        self.deliver(request, code, &mut handle, response).await
    }

    /// Sends `response` (whose code is `code`) and counts it; a response that
    /// cannot be sent is reported as SERVFAIL.
    async fn deliver<'a>(
        &self,
        request: &Request,
        code: ResponseCode,
        handle: &mut impl ResponseHandler,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> ResponseInfo {
        let info = match handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: sending a response");
                return failed(request);
            }
        };
        if let Some(m) = &self.metrics {
            m.count(code);
        }
        info
    }
}

/// What a response that could not be sent is reported as.
fn failed(request: &Request) -> ResponseInfo {
    let mut metadata = Metadata::response_from_request(&request.metadata);
    metadata.response_code = ResponseCode::ServFail;
    hickory_proto::op::Header {
        metadata,
        counts: Default::default(),
    }
    .into()
}

/// The address whose location decides: the EDNS Client Subnet's, when the query
/// has one with a non-zero source prefix, else the source's; and that option.
fn client_address(request: &Request) -> (IpAddr, Option<ClientSubnet>) {
    let subnet = request
        .edns
        .as_ref()
        .and_then(|e| e.option(EdnsCode::Subnet))
        .and_then(|o| match o {
            EdnsOption::Subnet(s) => Some(*s),
            _ => None,
        });
    match subnet {
        Some(s) if s.source_prefix() > 0 => (s.addr(), Some(s)),
        _ => (request.src().ip(), subnet),
    }
}

#[async_trait::async_trait]
impl RequestHandler for DnsHandler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let mut edns = None;
        if let Some(asked) = &request.edns {
            let mut e = Edns::new();
            e.set_max_payload(asked.max_payload().max(512));
            e.set_version(0);
            if asked.version() > 0 {
                return self
                    .send(request, ResponseCode::BADVERS, Some(&e), response_handle)
                    .await;
            }
            edns = Some(e);
        }
        if request.metadata.message_type != MessageType::Query {
            return self
                .send(
                    request,
                    ResponseCode::FormErr,
                    edns.as_ref(),
                    response_handle,
                )
                .await;
        }
        if request.metadata.op_code != OpCode::Query {
            return self
                .send(
                    request,
                    ResponseCode::NotImp,
                    edns.as_ref(),
                    response_handle,
                )
                .await;
        }
        let Ok(info) = request.request_info() else {
            // None or several questions.
            return self
                .send(
                    request,
                    ResponseCode::FormErr,
                    edns.as_ref(),
                    response_handle,
                )
                .await;
        };
        if info.query.query_class() != DNSClass::IN {
            return self
                .send(
                    request,
                    ResponseCode::Refused,
                    edns.as_ref(),
                    response_handle,
                )
                .await;
        }
        let index = self.index();
        let (ip, subnet) = client_address(request);
        let location = index.table().locality.locate(ip);
        let query = info.query.original();
        let found = answer(
            &self.zones,
            &index,
            query.name(),
            query.query_type(),
            &location,
        );
        if let (Some(e), Some(s)) = (edns.as_mut(), subnet) {
            // RFC 7871: the answer holds for the client's whole source prefix when
            // it depends on where the client is; for everyone otherwise.
            let scope = if found.located { s.source_prefix() } else { 0 };
            e.options_mut().insert(EdnsOption::Subnet(ClientSubnet::new(
                s.addr(),
                s.source_prefix(),
                scope,
            )));
        }
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.authoritative = found.authoritative;
        metadata.response_code = found.code;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            found.answers.iter(),
            found.authorities.iter(),
            std::iter::empty(),
            found.additionals.iter(),
        );
        self.deliver(request, found.code, &mut response_handle, response)
            .await
    }
}

/// Binds `addr` for UDP and TCP on the same port (with port 0, a free port both
/// have).
pub async fn bind(addr: &str) -> std::io::Result<(tokio::net::UdpSocket, tokio::net::TcpListener)> {
    let mut last = None;
    for target in tokio::net::lookup_host(addr).await? {
        // A free UDP port may be taken for TCP: try a few.
        for _ in 0..20 {
            let udp = match tokio::net::UdpSocket::bind(target).await {
                Ok(s) => s,
                Err(e) => {
                    last = Some(e);
                    break;
                }
            };
            let port = udp.local_addr()?.port();
            match tokio::net::TcpListener::bind(SocketAddr::new(target.ip(), port)).await {
                Ok(tcp) => return Ok((udp, tcp)),
                Err(e) => {
                    last = Some(e);
                    if target.port() != 0 {
                        break;
                    }
                }
            }
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{addr} names no address"),
        )
    }))
}

/// Serves `handler` on `udp` and `tcp` until `shutdown` resolves.
pub fn serve(
    udp: tokio::net::UdpSocket,
    tcp: tokio::net::TcpListener,
    handler: DnsHandler,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let mut server = Server::new(handler);
    server.register_socket(udp);
    // A TCP client idle for 10 s is dropped; up to 32 answers queued per connection.
    server.register_listener(tcp, Duration::from_secs(10), 32);
    let token = server.shutdown_token().clone();
    tokio::spawn(async move {
        shutdown.await;
        token.cancel();
    });
    tokio::spawn(async move {
        if let Err(e) = server.block_until_done().await {
            tracing::error!(error = %e, "the DNS server stopped");
        }
    })
}

/// A response handler that keeps the encoded response (for [`respond`]).
#[derive(Clone, Default)]
struct Keep(Arc<std::sync::Mutex<Vec<u8>>>);

#[async_trait::async_trait]
impl ResponseHandler for Keep {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
            impl Iterator<Item = &'a hickory_proto::rr::Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, hickory_server::net::NetError> {
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = hickory_proto::serialize::binary::BinEncoder::new(&mut bytes);
        let info = response.destructive_emit(&mut encoder)?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = bytes;
        Ok(info)
    }
}

/// Answers one query in process, as if it came over TCP from `src`: the encoded
/// response, or `None` when `query` is not a DNS message at all (the server
/// answers a message that has a header but does not parse with FORMERR). For tests
/// and benchmarks of the handler without sockets.
pub async fn respond<H: RequestHandler>(
    handler: &H,
    query: &[u8],
    src: SocketAddr,
) -> Option<Vec<u8>> {
    let request = Request::from_bytes(
        query.to_vec(),
        src,
        hickory_server::net::xfer::Protocol::Tcp,
    )
    .ok()?;
    let keep = Keep::default();
    handler
        .handle_request::<_, hickory_server::net::runtime::TokioTime>(&request, keep.clone())
        .await;
    let bytes = std::mem::take(&mut *keep.0.lock().unwrap_or_else(|p| p.into_inner()));
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::{Backend, Locality, Route, RouteKey, RouteKind, ServicePort};
    use fedwasm_sdk::Location;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RData, RecordType};

    /// `web` in `shop` on m1 (Europe, 192.0.2.1) and m3 (Asia, 192.0.2.3); Asia
    /// ranks m3 first, everyone else m1. Clients on 127.1.0.0/16 are in Asia.
    fn handler() -> DnsHandler {
        let backend = |cluster: &str, region: &str, ip: &str| Backend {
            addresses: vec![ip.into()],
            ..Backend::serving(cluster, region, &format!("{region}-a"))
        };
        // As the locality table places it: rankings are keyed by position too.
        let asia = Location {
            region: "asia-east1".into(),
            zone: "asia-east1-a".into(),
            position: fedwasm_sdk::regions::position("asia-east1"),
        };
        let table = Arc::new(Table {
            routes: vec![Route {
                key: RouteKey {
                    kind: RouteKind::Service,
                    namespace: "shop".into(),
                    name: "web".into(),
                    service: "web".into(),
                },
                rules: Vec::new(),
                ports: vec![ServicePort {
                    name: "http".into(),
                    port: 80,
                    protocol: "TCP".into(),
                }],
                backends: vec![
                    backend("m1", "europe-west1", "192.0.2.1"),
                    backend("m3", "asia-east1", "192.0.2.3"),
                ],
                rankings: vec![(asia, vec![1, 0]), (Location::default(), vec![0, 1])],
                plugin: "nearest-healthy".into(),
                error: None,
                problems: Vec::new(),
            }],
            locality: Arc::new(
                Locality::parse(
                    r#"{"clients": [{"cidr": "127.1.0.0/16", "region": "asia-east1", "zone": "asia-east1-a"}]}"#,
                )
                .unwrap(),
            ),
        });
        let zones = DnsConfig::default().zones().unwrap();
        DnsHandler::new(zones, Arc::new(move || table.clone()), None)
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        m
    }

    async fn ask(h: &DnsHandler, m: &Message, from: &str) -> Message {
        let src = SocketAddr::new(from.parse().unwrap(), 5353);
        let bytes = respond(h, &m.to_vec().unwrap(), src).await.unwrap();
        Message::from_vec(&bytes).unwrap()
    }

    fn addresses(m: &Message) -> Vec<String> {
        m.answers.iter().map(|r| r.data.to_string()).collect()
    }

    #[tokio::test]
    async fn the_source_or_the_client_subnet_decides() {
        let h = handler();
        let q = query("web.shop.svc.clusterset.local.", RecordType::A);
        let r = ask(&h, &q, "127.1.0.1").await;
        assert_eq!(r.metadata.id, 7);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative && !r.metadata.recursion_available);
        assert!(r.metadata.recursion_desired, "RD is copied");
        assert_eq!(addresses(&r), ["192.0.2.3"]);
        assert_eq!(addresses(&ask(&h, &q, "127.9.0.1").await), ["192.0.2.1"]);
        // A resolver in Europe asking for a client in Asia.
        let mut q = q.clone();
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                "127.1.2.0".parse().unwrap(),
                24,
                0,
            )));
        q.set_edns(edns);
        let r = ask(&h, &q, "127.9.0.1").await;
        assert_eq!(addresses(&r), ["192.0.2.3"]);
        let Some(EdnsOption::Subnet(s)) = r.edns.as_ref().unwrap().option(EdnsCode::Subnet) else {
            panic!("no client subnet in {r:?}");
        };
        assert_eq!((s.source_prefix(), s.scope_prefix()), (24, 24));
        // Source prefix 0: "do not use my address": the source decides.
        let mut edns = Edns::new();
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(
                "0.0.0.0".parse().unwrap(),
                0,
                0,
            )));
        q.set_edns(edns);
        assert_eq!(addresses(&ask(&h, &q, "127.9.0.1").await), ["192.0.2.1"]);
    }

    #[tokio::test]
    async fn what_is_not_a_plain_query_is_refused_or_an_error() {
        let h = handler();
        // Two questions.
        let mut q = query("web.shop.svc.clusterset.local.", RecordType::A);
        q.add_query(Query::query(
            Name::from_ascii("dns-version.clusterset.local.").unwrap(),
            RecordType::TXT,
        ));
        let r = ask(&h, &q, "127.1.0.1").await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // No question.
        let r = ask(&h, &Message::query(), "127.1.0.1").await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        // Another opcode.
        let mut q = query("web.shop.svc.clusterset.local.", RecordType::A);
        q.metadata.op_code = OpCode::Status;
        let r = ask(&h, &q, "127.1.0.1").await;
        assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        // Chaos class (`version.bind`).
        let mut q = query("version.bind.", RecordType::TXT);
        q.queries[0].set_query_class(DNSClass::CH);
        let r = ask(&h, &q, "127.1.0.1").await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        // EDNS version 1.
        let mut q = query("web.shop.svc.clusterset.local.", RecordType::A);
        let mut edns = Edns::new();
        edns.set_version(1);
        q.set_edns(edns);
        let r = ask(&h, &q, "127.1.0.1").await;
        // 16: BADVERS (decoded under its other name, BADSIG).
        assert_eq!(u16::from(r.metadata.response_code), 16);
        // Outside the zones; unknown inside.
        let r = ask(&h, &query("example.org.", RecordType::A), "127.1.0.1").await;
        assert_eq!(r.metadata.response_code, ResponseCode::Refused);
        assert!(!r.metadata.recursion_available && !r.metadata.authoritative);
        let r = ask(
            &h,
            &query("nope.shop.svc.clusterset.local.", RecordType::A),
            "127.1.0.1",
        )
        .await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(r.authorities[0].data, RData::SOA(_)));
        // Not a message: nothing to answer.
        let src = SocketAddr::new("127.1.0.1".parse().unwrap(), 1);
        assert!(respond(&h, b"\x00\x07", src).await.is_none());
    }

    /// Over real sockets: UDP and TCP on one port; garbage after a header is a
    /// FORMERR, never a panic.
    #[tokio::test]
    async fn udp_and_tcp_on_one_port() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (udp, tcp) = bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        assert_eq!(tcp.local_addr().unwrap(), addr);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = serve(udp, tcp, handler(), async move {
            let _ = stopped.await;
        });
        let q = query("web.shop.svc.clusterset.local.", RecordType::A)
            .to_vec()
            .unwrap();
        let client = tokio::net::UdpSocket::bind("127.1.0.1:0").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let mut udp_ask = async |bytes: &[u8]| {
            client.send_to(bytes, addr).await.unwrap();
            let (n, _) = tokio::time::timeout(Duration::from_secs(10), client.recv_from(&mut buf))
                .await
                .expect("an answer over UDP")
                .unwrap();
            Message::from_vec(&buf[..n]).unwrap()
        };
        assert_eq!(addresses(&udp_ask(&q).await), ["192.0.2.3"]);
        // A header, then nonsense.
        let mut junk = q[..12].to_vec();
        junk.extend_from_slice(&[0xff; 20]);
        let r = udp_ask(&junk).await;
        assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut framed = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        tcp.write_all(&framed).await.unwrap();
        let n = tcp.read_u16().await.unwrap();
        let mut body = vec![0u8; usize::from(n)];
        tcp.read_exact(&mut body).await.unwrap();
        // From 127.0.0.1: not in Asia.
        assert_eq!(addresses(&Message::from_vec(&body).unwrap()), ["192.0.2.1"]);
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the server stops")
            .unwrap();
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn runtime() -> tokio::runtime::Runtime {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        }

        const CODES: [ResponseCode; 5] = [
            ResponseCode::NoError,
            ResponseCode::NXDomain,
            ResponseCode::Refused,
            ResponseCode::FormErr,
            ResponseCode::NotImp,
        ];

        proptest! {
            /// Any bytes on the DNS port: no panic; an answer, if any, is a DNS
            /// message for the same query id with a clear code.
            #[test]
            fn any_packet_is_answered_clearly_or_dropped(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
                let h = handler();
                let src = SocketAddr::new("127.1.0.1".parse().unwrap(), 5353);
                if let Some(out) = runtime().block_on(respond(&h, &bytes, src)) {
                    let m = Message::from_vec(&out);
                    prop_assert!(m.is_ok(), "an answer that does not parse: {out:?}");
                    let m = m.unwrap();
                    prop_assert!(CODES.contains(&m.metadata.response_code), "{:?}", m.metadata.response_code);
                    if bytes.len() >= 2 {
                        prop_assert_eq!(m.metadata.id, u16::from_be_bytes([bytes[0], bytes[1]]));
                    }
                }
            }

            /// Well-formed queries for any name and type, in and out of the zones:
            /// an answer with a clear code every time.
            #[test]
            fn any_query_is_answered_clearly(
                label in "[a-zA-Z0-9][a-zA-Z0-9_-]{0,19}",
                under in prop_oneof![
                    Just(".shop.svc.clusterset.local."),
                    Just(".svc.clusterset.local."),
                    Just(".clusterset.local."),
                    Just(".example.org."),
                    Just("."),
                ],
                qtype in prop_oneof![
                    Just(RecordType::A), Just(RecordType::AAAA), Just(RecordType::SRV),
                    Just(RecordType::TXT), Just(RecordType::SOA), Just(RecordType::NS),
                    Just(RecordType::CNAME), Just(RecordType::AXFR), Just(RecordType::ANY),
                    Just(RecordType::MX), Just(RecordType::PTR),
                ],
            ) {
                let h = handler();
                let name = format!("{label}{under}");
                let q = query(&name, qtype);
                let r = runtime().block_on(ask(&h, &q, "127.9.0.1"));
                prop_assert_eq!(r.metadata.id, 7);
                prop_assert!(CODES.contains(&r.metadata.response_code), "{name} {qtype}: {:?}", r.metadata.response_code);
            }
        }
    }
}
