//! Every default of the config file, in one place: what a key is when the
//! file leaves it out (docs/configuration.md lists the same values).

use std::net::SocketAddr;
use std::time::Duration;

use super::ServerConfig;
use super::{AccessLogConfig, AccessLogFormat, AdminConfig, BalanceKind, Protocol, RetryOn};

// [server]
/// Runtime worker threads: 0 = one per CPU.
pub const DEFAULT_WORKERS: usize = 0;
pub const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONNECTIONS: usize = 65536;
pub const DEFAULT_MAX_HEADER_BYTES: usize = 65536;
/// 0 = unlimited.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 0;

// [admin]
pub const DEFAULT_ADMIN_BIND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9901);

// [access_log]
pub const DEFAULT_ACCESS_LOG_FORMAT: AccessLogFormat = AccessLogFormat::Json;

// [upstream.NAME]
pub const DEFAULT_BALANCE: BalanceKind = BalanceKind::RoundRobin;
pub const DEFAULT_PROTOCOL: Protocol = Protocol::Http1;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
pub const DEFAULT_POOL_MAX_IDLE: usize = 256;
pub const DEFAULT_RETRIES: u32 = 1;
/// `retry_on` when the key is absent.
pub const DEFAULT_RETRY_ON: RetryOn = RetryOn {
    connect_failure: true,
    reset: true,
    ..RetryOn::none()
};

pub const DEFAULT_SLOW_START: Duration = Duration::ZERO;

// [upstream.NAME.discovery]
pub const DEFAULT_DISCOVERY_MIN_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_DISCOVERY_MAX_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_REMOVED_PERCENT: u32 = 50;
/// SRV weights are clamped to 1..=this (the largest endpoint weight).
pub const DEFAULT_DISCOVERY_WEIGHT: u32 = 1;

// [upstream.NAME.health_check]
pub const DEFAULT_HEALTH_PATH: &str = "/healthz";
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(5);
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 2;
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
pub const DEFAULT_EXPECT_STATUS: &str = "200-399";

// [upstream.NAME.outlier]
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;
pub const DEFAULT_EJECTION_TIME: Duration = Duration::from_secs(30);
pub const DEFAULT_MAX_EJECTED_PERCENT: u32 = 50;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            workers: DEFAULT_WORKERS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            max_request_body: DEFAULT_MAX_REQUEST_BODY,
        }
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            bind: Some(DEFAULT_ADMIN_BIND),
            token: None,
        }
    }
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            format: DEFAULT_ACCESS_LOG_FORMAT,
            path: None,
        }
    }
}

impl Default for RetryOn {
    fn default() -> Self {
        DEFAULT_RETRY_ON
    }
}

impl RetryOn {
    /// No cause at all (`retry_on = []`).
    pub const fn none() -> Self {
        Self {
            connect_failure: false,
            reset: false,
            status_502: false,
            status_503: false,
            status_504: false,
            timeout: false,
        }
    }
}
