//! Asking DNS: A and AAAA records, or SRV records and then each target's
//! addresses, with hickory-resolver. What comes back is the endpoint list
//! of the answer and how long it may be kept (its smallest TTL).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

use crate::config::{DiscoveryConfig, DiscoveryKind, EndpointConfig, MAX_WEIGHT};

/// How long one query waits for a server, and how many times it asks.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
const QUERY_ATTEMPTS: usize = 2;

/// One answer: its endpoints (sorted by address, each once) and how long
/// it is good for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub endpoints: Vec<EndpointConfig>,
    pub ttl: Duration,
}

/// The resolver for `config`: its `resolver` server, or the system's.
pub fn resolver(config: &DiscoveryConfig) -> Result<TokioResolver, String> {
    let provider = TokioRuntimeProvider::default();
    let mut builder = match config.resolver {
        Some(server) => {
            let connection = |mut c: ConnectionConfig| {
                c.port = server.port();
                c
            };
            let name_server = NameServerConfig::new(
                server.ip(),
                true,
                vec![
                    connection(ConnectionConfig::udp()),
                    connection(ConnectionConfig::tcp()),
                ],
            );
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(vec![name_server]),
                provider,
            )
        }
        None => TokioResolver::builder(provider)
            .map_err(|e| format!("cannot read the system's resolver configuration: {e}"))?,
    };
    let options = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = QUERY_ATTEMPTS;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    // Each resolution asks the server: fulcrum keeps the answer for its TTL
    // itself, and a cached negative answer would hide a recovery.
    options.cache_size = 0;
    options.use_hosts_file = ResolveHosts::Never;
    builder
        .build()
        .map_err(|e| format!("cannot build a resolver: {e}"))
}

/// Resolves `config.name` once.
pub async fn resolve(resolver: &TokioResolver, config: &DiscoveryConfig) -> Result<Answer, String> {
    let now = Instant::now();
    let (mut endpoints, valid_until) = match config.kind {
        DiscoveryKind::A => {
            let lookup = resolver
                .lookup_ip(config.name.as_str())
                .await
                .map_err(|e| describe(&e))?;
            let endpoints = lookup
                .iter()
                .map(|ip| EndpointConfig {
                    address: SocketAddr::new(ip, config.port).to_string(),
                    weight: config.weight,
                    priority: 0,
                })
                .collect();
            (endpoints, lookup.valid_until())
        }
        DiscoveryKind::Srv => srv(resolver, &config.name).await?,
    };
    endpoints.sort_by(|a, b| (a.priority, &a.address).cmp(&(b.priority, &b.address)));
    // An address in two records: the first by priority keeps it.
    let mut seen = std::collections::HashSet::new();
    endpoints.retain(|e| seen.insert(e.address.clone()));
    endpoints.sort_by(|a, b| a.address.cmp(&b.address));
    if endpoints.is_empty() {
        return Err("the answer has no records".into());
    }
    Ok(Answer {
        endpoints,
        ttl: valid_until.saturating_duration_since(now),
    })
}

/// SRV records, then each target's A and AAAA records.
async fn srv(
    resolver: &TokioResolver,
    name: &str,
) -> Result<(Vec<EndpointConfig>, Instant), String> {
    let lookup = resolver.srv_lookup(name).await.map_err(|e| describe(&e))?;
    let records: Vec<_> = lookup
        .answers()
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.clone()),
            _ => None,
        })
        .collect();
    let targets = join_all(
        records
            .iter()
            .map(|srv| resolver.lookup_ip(srv.target.clone())),
    )
    .await;
    let mut valid_until = lookup.valid_until();
    let mut endpoints = Vec::new();
    for (srv, target) in records.iter().zip(targets) {
        // A target that does not resolve is left out, as an SRV client
        // would skip it; the others still serve.
        let Ok(addresses) = target else {
            continue;
        };
        valid_until = valid_until.min(addresses.valid_until());
        for ip in addresses.iter() {
            endpoints.push(EndpointConfig {
                address: SocketAddr::new(ip, srv.port).to_string(),
                weight: u32::from(srv.weight).clamp(1, MAX_WEIGHT),
                priority: srv.priority,
            });
        }
    }
    Ok((endpoints, valid_until))
}

/// A failed resolution, in a few words (logged, shown in /status).
fn describe(error: &NetError) -> String {
    if error.is_nx_domain() {
        "NXDOMAIN: the name does not exist".into()
    } else if error.is_no_records_found() {
        "the answer has no records".into()
    } else if matches!(error, NetError::Timeout) {
        "no answer from the DNS server (timeout)".into()
    } else if let NetError::Dns(DnsError::ResponseCode(code)) = error {
        let name = match code {
            ResponseCode::ServFail => "SERVFAIL",
            ResponseCode::Refused => "REFUSED",
            ResponseCode::FormErr => "FORMERR",
            ResponseCode::NotImp => "NOTIMP",
            other => other.to_str(),
        };
        format!("{name}: the DNS server answered with an error")
    } else {
        error.to_string()
    }
}
