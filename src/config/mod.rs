//! The configuration: `load(path)` reads one TOML file into a validated
//! [`Config`], or returns every problem found, each with file:line:column and
//! the dotted key.
//!
//! Two layers (see `raw.rs` and `validate/`): the spanned TOML document, then
//! domain types whose invariants hold (names unique, references resolved,
//! values in range). Nothing is silently clamped.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

pub mod defaults;
mod raw;
pub mod units;
mod validate;

pub use units::StatusRanges;

/// A whole, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was read from, as given.
    pub path: PathBuf,
    /// The text it was parsed from (served at /config, compared by the watcher).
    pub source: String,
    pub server: ServerConfig,
    pub admin: AdminConfig,
    pub access_log: AccessLogConfig,
    pub listeners: Vec<ListenerConfig>,
    pub routes: Vec<RouteConfig>,
    pub upstreams: Vec<UpstreamConfig>,
    /// What is valid but likely a mistake (a route that can never match, an
    /// upstream no route uses), each with its place in the file.
    pub warnings: Vec<ConfigError>,
}

/// `[server]`: process-wide limits and timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// Runtime worker threads; 0 = one per CPU.
    pub workers: usize,
    pub shutdown_timeout: Duration,
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    /// 0 = unlimited.
    pub max_request_body: u64,
}

/// `[admin]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    /// `None` when `bind = ""` (disabled).
    pub bind: Option<SocketAddr>,
    pub token: Option<String>,
}

/// `[access_log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub format: AccessLogFormat,
    /// `None` = stdout.
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    Json,
    Common,
}

/// `[[listener]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// The kernel hands over a connection once its first bytes have come
    /// (TCP_DEFER_ACCEPT), or after about a second without any: one
    /// wake-up and one poll fewer per connection.
    pub defer_accept: bool,
    pub tls: Option<TlsConfig>,
}

/// `[listener.tls]`: certificates chosen by SNI.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub certificates: Vec<CertificateConfig>,
    /// TLS 1.3 session tickets and TLS 1.2 session IDs (a cache of 256
    /// sessions per listener); off, every connection makes a full
    /// handshake.
    pub session_resumption: bool,
}

/// One certificate chain and its private key, paths resolved against the
/// config file's directory.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// `[[route]]`, with references resolved to indices.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub name: String,
    /// Indices into `Config::listeners`; empty = every listener.
    pub listeners: Vec<usize>,
    pub host: Option<HostPattern>,
    pub path_prefix: String,
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    pub strip_prefix: bool,
}

/// A route's host, lower-cased at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`, kept as the suffix `.example.com`.
    Wildcard(String),
}

/// `[upstream.NAME]`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub balance: BalanceKind,
    pub hash_key: Option<HashKey>,
    /// 0 = off.
    pub bounded_load: f64,
    pub protocol: Protocol,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle: usize,
    pub retries: u32,
    pub retry_on: RetryOn,
    pub fail_open: bool,
    /// As written; empty when `discovery` gives the endpoints.
    pub endpoints: Vec<EndpointConfig>,
    /// Endpoints from DNS instead of `endpoints`.
    pub discovery: Option<DiscoveryConfig>,
    /// A joining or returning endpoint's ramp; zero = off.
    pub slow_start: Duration,
    pub health_check: Option<HealthCheckConfig>,
    pub outlier: Option<OutlierConfig>,
}

/// `[upstream.NAME.discovery]`: endpoints from DNS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryConfig {
    /// The name to resolve, as written.
    pub name: String,
    pub kind: DiscoveryKind,
    /// Type `a`: the port of every endpoint.
    pub port: u16,
    /// Type `a`: the weight of every endpoint.
    pub weight: u32,
    /// The DNS server to ask; `None` = the system's resolvers.
    pub resolver: Option<std::net::SocketAddr>,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub max_removed_percent: u32,
}

/// What a discovery name is resolved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    /// A and AAAA records.
    A,
    /// SRV records, then each target's A and AAAA records.
    Srv,
}

impl DiscoveryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DiscoveryKind::A => "a",
            DiscoveryKind::Srv => "srv",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceKind {
    RoundRobin,
    Random,
    LeastRequests,
    PeakEwma,
    ConsistentHash,
    Maglev,
}

/// Where a hashing balancer takes its key from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(HeaderName),
    Cookie(String),
    Query(String),
    ClientIp,
    Path,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// The causes a request may be retried for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOn {
    pub connect_failure: bool,
    pub reset: bool,
    pub status_502: bool,
    pub status_503: bool,
    pub status_504: bool,
    pub timeout: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `host:port` as configured; also the endpoint's metric label.
    pub address: String,
    /// 0 = drained.
    pub weight: u32,
    /// SRV priority (lower serves first); 0 for configured endpoints.
    pub priority: u16,
}

/// `[upstream.NAME.health_check]`.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    pub expect_status: StatusRanges,
    /// Whether a new endpoint is usable before its first probe.
    pub initial_usable: bool,
}

/// `[upstream.NAME.outlier]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OutlierConfig {
    pub consecutive_failures: u32,
    pub ejection_time: Duration,
    pub max_ejected_percent: u32,
}

/// One error in the file: `FILE:LINE:COLUMN: KEY: why`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<ConfigError>),
}

/// The largest weight of an endpoint (as HAProxy's): bounds the size of the
/// tables balancers build from weights.
pub const MAX_WEIGHT: u32 = 256;

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.column, self.key, self.message
        )
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl LoadError {
    /// Every error, one per line.
    pub fn errors(&self) -> Vec<String> {
        match self {
            LoadError::Read { .. } => vec![self.to_string()],
            LoadError::Invalid(errors) => errors.iter().map(ToString::to_string).collect(),
        }
    }
}

impl Config {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamConfig> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// The short summary `fulcrum check` prints for a valid file.
    pub fn summary(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "{}: valid", self.path.display());
        let _ = writeln!(out, "listeners ({}):", self.listeners.len());
        for l in &self.listeners {
            let tls = match &l.tls {
                Some(t) => format!("tls ({} certificates)", t.certificates.len()),
                None => "plain".to_owned(),
            };
            let _ = writeln!(out, "  {:<16} {:<24} {tls}", l.name, l.bind);
        }
        let _ = writeln!(out, "routes ({}):", self.routes.len());
        for r in &self.routes {
            let host = match &r.host {
                Some(HostPattern::Exact(h)) => h.clone(),
                Some(HostPattern::Wildcard(s)) => format!("*{s}"),
                None => "*".to_owned(),
            };
            let on = if r.listeners.is_empty() {
                "all listeners".to_owned()
            } else {
                r.listeners
                    .iter()
                    .map(|&i| self.listeners[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let strip = if r.strip_prefix {
                " (strip prefix)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  {:<16} {host}{}{strip} -> {} on {on}",
                r.name, r.path_prefix, self.upstreams[r.upstream].name
            );
        }
        let _ = writeln!(out, "upstreams ({}):", self.upstreams.len());
        for u in &self.upstreams {
            let endpoints = u
                .endpoints
                .iter()
                .map(|e| format!("{} (weight {})", e.address, e.weight))
                .collect::<Vec<_>>()
                .join(", ");
            let key = u
                .hash_key
                .as_ref()
                .map(|k| format!(" by {k}"))
                .unwrap_or_default();
            match &u.discovery {
                // `check` does not resolve.
                Some(d) => {
                    let port = match d.kind {
                        DiscoveryKind::A => format!(", port {}", d.port),
                        DiscoveryKind::Srv => String::new(),
                    };
                    let _ = writeln!(
                        out,
                        "  {:<16} {}{key}, endpoints from DNS: {} {}{port} (not resolved by check)",
                        u.name,
                        u.balance.as_str(),
                        d.kind.as_str(),
                        d.name
                    );
                }
                None => {
                    let _ = writeln!(
                        out,
                        "  {:<16} {}{key}, {} endpoint(s): {endpoints}",
                        u.name,
                        u.balance.as_str(),
                        u.endpoints.len()
                    );
                }
            }
        }
        out
    }
}

impl BalanceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "round_robin",
            BalanceKind::Random => "random",
            BalanceKind::LeastRequests => "least_requests",
            BalanceKind::PeakEwma => "peak_ewma",
            BalanceKind::ConsistentHash => "consistent_hash",
            BalanceKind::Maglev => "maglev",
        }
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HashKey::Header(name) => write!(f, "header:{name}"),
            HashKey::Cookie(name) => write!(f, "cookie:{name}"),
            HashKey::Query(name) => write!(f, "query:{name}"),
            HashKey::ClientIp => f.write_str("client_ip"),
            HashKey::Path => f.write_str("path"),
        }
    }
}

fn base_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(path, &text)
}

/// Validates `text` as if read from `path` (relative paths in it resolve
/// against `path`'s directory).
pub fn parse(path: &Path, text: &str) -> Result<Config, LoadError> {
    validate::validate(path, base_dir(path), text).map_err(LoadError::Invalid)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_columns() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        assert_eq!(line_column(text, 9), (2, 3));
    }
}
