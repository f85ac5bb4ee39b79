//! `[server]`, `[admin]` and `[access_log]`.

use std::net::SocketAddr;
use std::path::Path;

use super::{duration, size};
use crate::config::defaults::*;
use crate::config::raw::{Issues, Table};
use crate::config::units::parse_duration;
use crate::config::{AccessLogConfig, AccessLogFormat, AdminConfig, ServerConfig};

const SERVER_KEYS: &[&str] = &[
    "workers",
    "shutdown_timeout",
    "header_read_timeout",
    "body_read_timeout",
    "idle_timeout",
    "max_connections",
    "max_header_bytes",
    "max_request_body",
];
const ADMIN_KEYS: &[&str] = &["bind", "token"];
const ACCESS_LOG_KEYS: &[&str] = &["enabled", "format", "path"];

pub(super) fn server(t: &Table<'_, '_>, issues: &mut Issues) -> ServerConfig {
    t.deny_unknown(SERVER_KEYS, issues);
    let d = ServerConfig::default();
    let max_header_bytes = match size(t, "max_header_bytes", issues) {
        Some(f) if !(1024..=(1 << 24)).contains(&f.value) => {
            f.fail(issues, "must be between 1KiB and 16MiB");
            d.max_header_bytes
        }
        Some(f) => f.value as usize,
        None => d.max_header_bytes,
    };
    ServerConfig {
        workers: t
            .int("workers", 0..1025, issues)
            .map_or(d.workers, |f| f.value as usize),
        shutdown_timeout: match t.parsed("shutdown_timeout", parse_duration, issues) {
            Some(f) => f.value,
            None => d.shutdown_timeout,
        },
        header_read_timeout: duration(t, "header_read_timeout", d.header_read_timeout, issues),
        body_read_timeout: duration(t, "body_read_timeout", d.body_read_timeout, issues),
        idle_timeout: duration(t, "idle_timeout", d.idle_timeout, issues),
        max_connections: t
            .int("max_connections", 1..10_000_001, issues)
            .map_or(d.max_connections, |f| f.value as usize),
        max_header_bytes,
        max_request_body: size(t, "max_request_body", issues)
            .map_or(d.max_request_body, |f| f.value),
    }
}

pub(super) fn admin(t: &Table<'_, '_>, issues: &mut Issues) -> AdminConfig {
    t.deny_unknown(ADMIN_KEYS, issues);
    let bind = match t.string("bind", issues) {
        None => Some(DEFAULT_ADMIN_BIND),
        Some(f) if f.value.is_empty() => None,
        Some(f) => match f.value.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                f.fail(issues, format!("`{}` is not an IP:port address", f.value));
                None
            }
        },
    };
    let token = match t.string("token", issues) {
        Some(f) if f.value.is_empty() => {
            f.fail(issues, "must not be empty");
            None
        }
        Some(f) => Some(f.value.to_owned()),
        None => None,
    };
    if let Some(addr) = bind
        && !addr.ip().is_loopback()
        && token.is_none()
    {
        // Reported at the `[admin]` header: the key that is missing has
        // no position of its own.
        issues.push(
            t.span.clone(),
            "admin.token",
            format!("required when admin.bind ({addr}) is not a loopback address"),
        );
    }
    AdminConfig { bind, token }
}

pub(super) fn access_log(t: &Table<'_, '_>, dir: &Path, issues: &mut Issues) -> AccessLogConfig {
    t.deny_unknown(ACCESS_LOG_KEYS, issues);
    let format = t
        .parsed(
            "format",
            |s| match s {
                "json" => Ok(AccessLogFormat::Json),
                "common" => Ok(AccessLogFormat::Common),
                other => Err(format!("`{other}` is not a format; use json or common")),
            },
            issues,
        )
        .map_or(DEFAULT_ACCESS_LOG_FORMAT, |f| f.value);
    let path = match t.string("path", issues) {
        Some(f) if f.value.is_empty() => {
            f.fail(issues, "must not be empty; use \"-\" for stdout");
            None
        }
        Some(f) if f.value == "-" => None,
        Some(f) => Some(dir.join(f.value)),
        None => None,
    };
    AccessLogConfig {
        enabled: t.bool("enabled", issues).unwrap_or(false),
        format,
        path,
    }
}
