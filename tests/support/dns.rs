//! A real DNS server on loopback for discovery tests: hickory-server's
//! server (UDP and TCP) with a handler whose answers the test sets and
//! changes: records (A, AAAA, SRV), SERVFAIL, NXDOMAIN, an empty answer,
//! or silence (the resolver times out).
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_server::Server;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Header, HeaderCounts, Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use tokio::net::{TcpListener, UdpSocket};

/// What the server answers for a name.
#[derive(Debug, Clone)]
pub enum Reply {
    /// These records (of the asked type; others answer empty).
    Records(Vec<Record>),
    ServFail,
    NxDomain,
    /// NOERROR with no record.
    Empty,
    /// No answer at all.
    Silent,
}

#[derive(Default)]
struct Zone {
    replies: Mutex<HashMap<String, Reply>>,
    queries: Mutex<HashMap<String, usize>>,
}

/// The server; dropping it stops nothing (the test's runtime ends it).
#[derive(Clone)]
pub struct DnsServer {
    pub addr: SocketAddr,
    zone: Arc<Zone>,
}

struct Handler(Arc<Zone>);

impl DnsServer {
    pub async fn start() -> Self {
        // TCP on the same port as UDP, for truncated answers: try ports
        // until both are free.
        let (udp, tcp, addr) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp, addr);
            }
        };
        let zone = Arc::new(Zone::default());
        let mut server = Server::new(Handler(Arc::clone(&zone)));
        server.register_socket(udp);
        server.register_listener(tcp, Duration::from_secs(5), 65535);
        tokio::spawn(async move {
            let _ = server.block_until_done().await;
        });
        Self { addr, zone }
    }

    /// Sets what `name` answers (any type).
    pub fn set(&self, name: &str, reply: Reply) {
        self.zone.replies.lock().unwrap().insert(key(name), reply);
    }

    /// Answers `name` with A/AAAA records of `ips`, TTL `ttl` seconds.
    pub fn set_addresses(&self, name: &str, ips: &[IpAddr], ttl: u32) {
        self.set(name, Reply::Records(address_records(name, ips, ttl)));
    }

    /// How many queries asked for `name`.
    pub fn queries(&self, name: &str) -> usize {
        *self
            .zone
            .queries
            .lock()
            .unwrap()
            .get(&key(name))
            .unwrap_or(&0)
    }
}

fn key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A and AAAA records of `name`.
pub fn address_records(name: &str, ips: &[IpAddr], ttl: u32) -> Vec<Record> {
    let name = Name::from_ascii(name).unwrap();
    ips.iter()
        .map(|ip| match ip {
            IpAddr::V4(v4) => Record::from_rdata(name.clone(), ttl, RData::A(A(*v4))),
            IpAddr::V6(v6) => Record::from_rdata(name.clone(), ttl, RData::AAAA(AAAA(*v6))),
        })
        .collect()
}

/// An SRV record of `name`.
pub fn srv(name: &str, priority: u16, weight: u16, port: u16, target: &str, ttl: u32) -> Record {
    Record::from_rdata(
        Name::from_ascii(name).unwrap(),
        ttl,
        RData::SRV(SRV::new(
            priority,
            weight,
            port,
            Name::from_ascii(target).unwrap(),
        )),
    )
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let failed = || {
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            ResponseInfo::from(Header {
                metadata,
                counts: HeaderCounts::default(),
            })
        };
        let Ok(info) = request.request_info() else {
            return failed();
        };
        let name = key(&info.query.name().to_string());
        let asked = info.query.query_type();
        *self
            .0
            .queries
            .lock()
            .unwrap()
            .entry(name.clone())
            .or_default() += 1;
        let reply = self.0.replies.lock().unwrap().get(&name).cloned();
        let builder = MessageResponseBuilder::from_message_request(request);
        let sent = match reply.unwrap_or(Reply::NxDomain) {
            Reply::Silent => {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return failed();
            }
            Reply::ServFail => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, ResponseCode::ServFail))
                    .await
            }
            Reply::NxDomain => {
                response_handle
                    .send_response(builder.error_msg(&request.metadata, ResponseCode::NXDomain))
                    .await
            }
            Reply::Empty => {
                let metadata = Metadata::response_from_request(&request.metadata);
                response_handle
                    .send_response(builder.build_no_records(metadata))
                    .await
            }
            Reply::Records(records) => {
                let answers: Vec<Record> = records
                    .into_iter()
                    .filter(|r| r.record_type() == asked || asked == RecordType::ANY)
                    .collect();
                let mut metadata = Metadata::response_from_request(&request.metadata);
                metadata.authoritative = true;
                response_handle
                    .send_response(builder.build(metadata, answers.iter(), [], [], []))
                    .await
            }
        };
        sent.unwrap_or_else(|_| failed())
    }
}
