//! The schema: walks the spanned document, checks every key, type and range,
//! resolves names, and builds [`Config`]. Every problem is collected; none
//! stops the walk.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use toml::de::DeTable;

use super::raw::{Field, Issues, Table, element_str, key_at};
use super::units::{StatusRanges, parse_duration, parse_size};
use super::*;

const ROOT_KEYS: &[&str] = &[
    "server",
    "admin",
    "access_log",
    "listener",
    "route",
    "upstream",
];
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
const LISTENER_KEYS: &[&str] = &["name", "bind", "tls"];
const TLS_KEYS: &[&str] = &["certificates"];
const CERT_KEYS: &[&str] = &["cert", "key"];
const ROUTE_KEYS: &[&str] = &[
    "name",
    "listeners",
    "host",
    "path_prefix",
    "upstream",
    "strip_prefix",
];
const UPSTREAM_KEYS: &[&str] = &[
    "balance",
    "hash_key",
    "bounded_load",
    "protocol",
    "connect_timeout",
    "response_timeout",
    "pool_idle_timeout",
    "pool_max_idle",
    "retries",
    "retry_on",
    "fail_open",
    "endpoints",
    "health_check",
    "outlier",
];
const ENDPOINT_KEYS: &[&str] = &["address", "weight"];
const HEALTH_KEYS: &[&str] = &[
    "path",
    "interval",
    "timeout",
    "healthy_threshold",
    "unhealthy_threshold",
    "expect_status",
    "initial",
];
const OUTLIER_KEYS: &[&str] = &[
    "consecutive_failures",
    "ejection_time",
    "max_ejected_percent",
];

/// Validates the whole file; on failure returns every error, in file order.
pub(super) fn validate(path: &Path, dir: &Path, text: &str) -> Result<Config, Vec<ConfigError>> {
    let file = path.display().to_string();
    let locate = |issues: Vec<raw::Issue>| -> Vec<ConfigError> {
        let mut errors: Vec<ConfigError> = issues
            .into_iter()
            .map(|issue| {
                let (line, column) = line_column(text, issue.span.start);
                ConfigError {
                    file: file.clone(),
                    line,
                    column,
                    key: issue.key,
                    message: issue.message,
                }
            })
            .collect();
        errors.sort_by_key(|e| (e.line, e.column));
        errors.dedup();
        errors
    };

    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        let mut issues = Issues::default();
        for error in syntax {
            let span = error.span().unwrap_or(0..0);
            let key = key_at(doc.get_ref(), span.start)
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| "(document)".into());
            issues.push(span, key, format!("invalid TOML: {}", error.message()));
        }
        return Err(locate(issues.0));
    }

    let mut issues = Issues::default();
    let root = Table::root(&doc);
    root.deny_unknown(ROOT_KEYS, &mut issues);
    let config = walk(&root, path, dir, &mut issues);
    if issues.is_empty() {
        Ok(Config {
            source: text.to_owned(),
            ..config
        })
    } else {
        Err(locate(issues.0))
    }
}

fn walk(root: &Table<'_, '_>, path: &Path, dir: &Path, issues: &mut Issues) -> Config {
    let server = root
        .table("server", issues)
        .map(|t| server(&t, issues))
        .unwrap_or_else(default_server);
    let access_log = root
        .table("access_log", issues)
        .map(|t| access_log(&t, dir, issues))
        .unwrap_or(AccessLogConfig {
            enabled: false,
            format: AccessLogFormat::Json,
            path: None,
        });

    let listener_tables = root.tables("listener", issues);
    let listeners: Vec<Field<ListenerConfig>> = listener_tables
        .iter()
        .filter_map(|t| listener(t, dir, issues))
        .collect();
    check_unique(
        listeners.iter().map(|l| (&l.value.name, l)),
        "listener",
        issues,
    );

    let upstreams: Vec<Field<UpstreamConfig>> = match root.table("upstream", issues) {
        Some(table) => table
            .entries()
            .filter_map(|(name, value)| {
                let t = raw::as_table(value, name.key.clone(), issues)?;
                upstream(name, &t, issues)
            })
            .collect(),
        None => Vec::new(),
    };

    let route_tables = root.tables("route", issues);
    let routes: Vec<Field<RouteConfig>> = route_tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| route(i, t, &listeners, &upstreams, issues))
        .collect();
    check_unique(routes.iter().map(|r| (&r.value.name, r)), "route", issues);

    let admin = root
        .table("admin", issues)
        .map(|t| admin(&t, issues))
        .unwrap_or(AdminConfig {
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
            token: None,
        });

    if listener_tables.is_empty() {
        issues.push(
            root.span.start..root.span.start,
            "listener",
            "at least one [[listener]] is required",
        );
    }

    Config {
        path: path.to_path_buf(),
        source: String::new(),
        server,
        admin,
        access_log,
        listeners: listeners.into_iter().map(|f| f.value).collect(),
        routes: routes.into_iter().map(|f| f.value).collect(),
        upstreams: upstreams.into_iter().map(|f| f.value).collect(),
    }
}

/// Reports the second (and later) of two items with the same name, at its name.
fn check_unique<'a, T: 'a>(
    items: impl Iterator<Item = (&'a String, &'a Field<T>)>,
    what: &str,
    issues: &mut Issues,
) {
    let mut seen: Vec<&String> = Vec::new();
    for (name, field) in items {
        if seen.contains(&name) {
            issues.push(
                field.span.clone(),
                format!("{}.name", field.key),
                format!("duplicate {what} name `{name}`"),
            );
        } else {
            seen.push(name);
        }
    }
}

fn default_server() -> ServerConfig {
    ServerConfig {
        workers: 0,
        shutdown_timeout: Duration::from_secs(30),
        header_read_timeout: Duration::from_secs(10),
        body_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(60),
        max_connections: 65536,
        max_header_bytes: 65536,
        max_request_body: 0,
    }
}

fn duration(t: &Table<'_, '_>, key: &str, default: Duration, issues: &mut Issues) -> Duration {
    match t.parsed(key, parse_duration, issues) {
        Some(f) if f.value.is_zero() => {
            f.fail(issues, "must be greater than 0");
            default
        }
        Some(f) => f.value,
        None => default,
    }
}

/// A size: an integer of bytes or a string with a unit.
fn size(t: &Table<'_, '_>, key: &str, issues: &mut Issues) -> Option<Field<u64>> {
    let field = t.value(key)?;
    match field.value {
        toml::de::DeValue::Integer(_) => {
            t.int(key, 0..i64::MAX, issues).map(|f| f.map(|n| n as u64))
        }
        _ => t.parsed(key, parse_size, issues),
    }
}

fn server(t: &Table<'_, '_>, issues: &mut Issues) -> ServerConfig {
    t.deny_unknown(SERVER_KEYS, issues);
    let d = default_server();
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
        max_request_body: size(t, "max_request_body", issues).map_or(0, |f| f.value),
    }
}

fn admin(t: &Table<'_, '_>, issues: &mut Issues) -> AdminConfig {
    t.deny_unknown(ADMIN_KEYS, issues);
    let bind = match t.string("bind", issues) {
        None => Some(SocketAddr::from(([127, 0, 0, 1], 9901))),
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

fn access_log(t: &Table<'_, '_>, dir: &Path, issues: &mut Issues) -> AccessLogConfig {
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
        .map_or(AccessLogFormat::Json, |f| f.value);
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

fn name(t: &Table<'_, '_>, issues: &mut Issues) -> Option<Field<String>> {
    let f = t.string("name", issues)?;
    if valid_name(f.value) {
        Some(f.map(str::to_owned))
    } else {
        f.fail(
            issues,
            "must be 1-64 characters of letters, digits, `_`, `-` or `.`",
        );
        None
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn listener(t: &Table<'_, '_>, dir: &Path, issues: &mut Issues) -> Option<Field<ListenerConfig>> {
    t.deny_unknown(LISTENER_KEYS, issues);
    if t.value("name").is_none() {
        t.missing("name", issues);
    }
    let name = name(t, issues);
    let bind = t.required_string("bind", issues).and_then(|f| {
        f.value
            .parse::<SocketAddr>()
            .map_err(|_| f.fail(issues, format!("`{}` is not an IP:port address", f.value)))
            .ok()
    });
    let tls = t
        .table("tls", issues)
        .and_then(|tls| tls_config(&tls, dir, issues));
    let name = name?;
    Some(Field {
        value: ListenerConfig {
            name: name.value,
            bind: bind?,
            tls,
        },
        span: name.span,
        key: t.path.clone(),
    })
}

fn tls_config(t: &Table<'_, '_>, dir: &Path, issues: &mut Issues) -> Option<TlsConfig> {
    t.deny_unknown(TLS_KEYS, issues);
    let Some(list) = t.array("certificates", issues) else {
        t.missing("certificates", issues);
        return None;
    };
    if list.value.is_empty() {
        list.fail(issues, "must list at least one certificate");
        return None;
    }
    let mut certificates = Vec::new();
    for element in &list.value {
        let toml::de::DeValue::Table(table) = element.value else {
            element.fail(issues, "expected a table { cert = \"..\", key = \"..\" }");
            continue;
        };
        let pair = raw::Table::inline(table, element.span.clone(), element.key.clone());
        pair.deny_unknown(CERT_KEYS, issues);
        let cert = pair.required_string("cert", issues);
        let key = pair.required_string("key", issues);
        let (Some(cert), Some(key)) = (cert, key) else {
            continue;
        };
        let config = CertificateConfig {
            cert: dir.join(cert.value),
            key: dir.join(key.value),
        };
        match crate::tls::load_certified_key(&config) {
            Ok(_) => certificates.push(config),
            Err(crate::tls::TlsError::Cert(why)) => cert.fail(issues, why),
            Err(crate::tls::TlsError::Key(why)) => key.fail(issues, why),
        }
    }
    Some(TlsConfig { certificates })
}

fn route(
    index: usize,
    t: &Table<'_, '_>,
    listeners: &[Field<ListenerConfig>],
    upstreams: &[Field<UpstreamConfig>],
    issues: &mut Issues,
) -> Option<Field<RouteConfig>> {
    t.deny_unknown(ROUTE_KEYS, issues);
    let name = match t.value("name") {
        Some(_) => name(t, issues)?,
        None => Field {
            value: format!("route{index}"),
            span: t.span.clone(),
            key: t.path.clone(),
        },
    };
    let mut listener_ids = Vec::new();
    if let Some(list) = t.array("listeners", issues) {
        for element in &list.value {
            let Some(wanted) = element_str(element, issues) else {
                continue;
            };
            match listeners.iter().position(|l| l.value.name == wanted) {
                Some(i) if listener_ids.contains(&i) => {
                    element.fail(issues, format!("listener `{wanted}` is listed twice"))
                }
                Some(i) => listener_ids.push(i),
                None => element.fail(issues, format!("no listener is named `{wanted}`")),
            }
        }
    }
    let host = t.parsed("host", parse_host, issues).map(|f| f.value);
    let path_prefix = match t.string("path_prefix", issues) {
        Some(f) if !f.value.starts_with('/') => {
            f.fail(issues, "must start with `/`");
            None
        }
        Some(f) if f.value.contains(['?', '#']) || f.value.contains(char::is_whitespace) => {
            f.fail(issues, "must be a path without query, fragment or spaces");
            None
        }
        // "/api/" matches like "/api": prefixes are compared segment-wise.
        Some(f) if f.value.len() > 1 => Some(f.value.trim_end_matches('/').to_owned()),
        Some(_) | None => Some("/".to_owned()),
    };
    let upstream = t.required_string("upstream", issues).and_then(|f| {
        let found = upstreams.iter().position(|u| u.value.name == f.value);
        if found.is_none() {
            f.fail(issues, format!("no upstream is named `{}`", f.value));
        }
        found
    });
    Some(Field {
        value: RouteConfig {
            name: name.value,
            listeners: listener_ids,
            host,
            path_prefix: path_prefix?,
            upstream: upstream?,
            strip_prefix: t.bool("strip_prefix", issues).unwrap_or(false),
        },
        span: name.span,
        key: t.path.clone(),
    })
}

fn parse_host(text: &str) -> Result<HostPattern, String> {
    let lower = text.to_ascii_lowercase();
    let (wildcard, name) = match lower.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, lower.as_str()),
    };
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !valid {
        return Err(format!(
            "`{text}` is not a host name; write `api.example.com` or `*.example.com` (no port)"
        ));
    }
    Ok(if wildcard {
        HostPattern::Wildcard(format!(".{name}"))
    } else {
        HostPattern::Exact(name.to_owned())
    })
}

fn upstream(
    name: Field<&str>,
    t: &Table<'_, '_>,
    issues: &mut Issues,
) -> Option<Field<UpstreamConfig>> {
    t.deny_unknown(UPSTREAM_KEYS, issues);
    if !valid_name(name.value) {
        name.fail(
            issues,
            "upstream names must be 1-64 characters of letters, digits, `_`, `-` or `.`",
        );
    }
    let balance = t
        .parsed("balance", parse_balance, issues)
        .map_or(BalanceKind::RoundRobin, |f| f.value);
    let hash_key = t
        .parsed("hash_key", parse_hash_key, issues)
        .map(|f| f.value);
    if matches!(balance, BalanceKind::ConsistentHash | BalanceKind::Maglev)
        && hash_key.is_none()
        && t.value("hash_key").is_none()
    {
        // At the table's header: the missing key has no position of its
        // own, and the balance value is not what is wrong.
        issues.push(
            t.span.clone(),
            format!("{}.hash_key", t.path),
            format!("required when balance = \"{}\"", balance.as_str()),
        );
    }
    let bounded_load = match t.float("bounded_load", issues) {
        Some(f) if f.value != 0.0 && f.value < 1.0 => {
            f.fail(issues, "must be 0 (off) or at least 1.0");
            0.0
        }
        Some(f) if f.value != 0.0 && balance != BalanceKind::ConsistentHash => {
            f.fail(issues, "applies only to balance = \"consistent_hash\"");
            0.0
        }
        Some(f) => f.value,
        None => 0.0,
    };
    let protocol = t
        .parsed(
            "protocol",
            |s| match s {
                "http1" => Ok(Protocol::Http1),
                "http2" => Ok(Protocol::Http2),
                other => Err(format!("`{other}` is not a protocol; use http1 or http2")),
            },
            issues,
        )
        .map_or(Protocol::Http1, |f| f.value);
    let retry_on = match t.array("retry_on", issues) {
        Some(list) => {
            let mut on = RetryOn::default();
            for element in &list.value {
                let Some(cause) = element_str(element, issues) else {
                    continue;
                };
                let flag = match cause {
                    "connect_failure" => &mut on.connect_failure,
                    "reset" => &mut on.reset,
                    "502" => &mut on.status_502,
                    "503" => &mut on.status_503,
                    "504" => &mut on.status_504,
                    "timeout" => &mut on.timeout,
                    other => {
                        element.fail(
                            issues,
                            format!(
                                "`{other}` is not a retry cause; use connect_failure, reset, 502, 503, 504 or timeout"
                            ),
                        );
                        continue;
                    }
                };
                *flag = true;
            }
            on
        }
        None => RetryOn {
            connect_failure: true,
            reset: true,
            ..RetryOn::default()
        },
    };
    let endpoints = endpoints(t, issues);
    let health_check = t
        .table("health_check", issues)
        .map(|h| health_check(&h, issues));
    let outlier = t.table("outlier", issues).map(|o| outlier(&o, issues));
    Some(Field {
        value: UpstreamConfig {
            name: name.value.to_owned(),
            balance,
            hash_key,
            bounded_load,
            protocol,
            connect_timeout: duration(t, "connect_timeout", Duration::from_secs(2), issues),
            response_timeout: duration(t, "response_timeout", Duration::from_secs(30), issues),
            pool_idle_timeout: duration(t, "pool_idle_timeout", Duration::from_secs(90), issues),
            pool_max_idle: t
                .int("pool_max_idle", 0..65537, issues)
                .map_or(256, |f| f.value as usize),
            retries: t
                .int("retries", 0..11, issues)
                .map_or(1, |f| f.value as u32),
            retry_on,
            fail_open: t.bool("fail_open", issues).unwrap_or(false),
            endpoints: endpoints?,
            health_check,
            outlier,
        },
        span: name.span,
        key: t.path.clone(),
    })
}

fn parse_balance(s: &str) -> Result<BalanceKind, String> {
    Ok(match s {
        "round_robin" => BalanceKind::RoundRobin,
        "random" => BalanceKind::Random,
        "least_requests" => BalanceKind::LeastRequests,
        "peak_ewma" => BalanceKind::PeakEwma,
        "consistent_hash" => BalanceKind::ConsistentHash,
        "maglev" => BalanceKind::Maglev,
        other => {
            return Err(format!(
                "`{other}` is not an algorithm; use round_robin, random, least_requests, peak_ewma, consistent_hash or maglev"
            ));
        }
    })
}

fn parse_hash_key(s: &str) -> Result<HashKey, String> {
    let named = |kind: &str, name: &str| -> Result<String, String> {
        if name.is_empty() {
            Err(format!("`{kind}:` needs a name, e.g. `{kind}:x-user-id`"))
        } else {
            Ok(name.to_owned())
        }
    };
    match s.split_once(':') {
        Some(("header", name)) => {
            let name = named("header", name)?;
            HeaderName::from_bytes(name.as_bytes())
                .map(HashKey::Header)
                .map_err(|_| format!("`{name}` is not a valid header name"))
        }
        Some(("cookie", name)) => named("cookie", name).map(HashKey::Cookie),
        Some(("query", name)) => named("query", name).map(HashKey::Query),
        None if s == "client_ip" => Ok(HashKey::ClientIp),
        None if s == "path" => Ok(HashKey::Path),
        _ => Err(format!(
            "`{s}` is not a hash key; use header:NAME, cookie:NAME, query:NAME, client_ip or path"
        )),
    }
}

fn endpoints(t: &Table<'_, '_>, issues: &mut Issues) -> Option<Vec<EndpointConfig>> {
    let Some(list) = t.array("endpoints", issues) else {
        if t.value("endpoints").is_none() {
            t.missing("endpoints", issues);
        }
        return None;
    };
    if list.value.is_empty() {
        list.fail(issues, "must not be empty");
        return None;
    }
    let mut out: Vec<EndpointConfig> = Vec::new();
    for element in &list.value {
        let toml::de::DeValue::Table(table) = element.value else {
            element.fail(
                issues,
                "expected a table { address = \"host:port\", weight = 1 }",
            );
            continue;
        };
        let e = raw::Table::inline(table, element.span.clone(), element.key.clone());
        e.deny_unknown(ENDPOINT_KEYS, issues);
        let weight = e
            .int("weight", 0..(MAX_WEIGHT as i64 + 1), issues)
            .map_or(1, |f| f.value as u32);
        let Some(address) = e.required_string("address", issues) else {
            continue;
        };
        if let Err(why) = check_address(address.value) {
            address.fail(issues, why);
            continue;
        }
        if out.iter().any(|o| o.address == address.value) {
            address.fail(issues, format!("duplicate endpoint `{}`", address.value));
            continue;
        }
        out.push(EndpointConfig {
            address: address.value.to_owned(),
            weight,
        });
    }
    Some(out)
}

fn check_address(address: &str) -> Result<(), String> {
    if address.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let bad = || format!("`{address}` is not host:port");
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if port_ok && host_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn threshold(t: &Table<'_, '_>, key: &str, default: u32, issues: &mut Issues) -> u32 {
    t.int(key, 1..1001, issues)
        .map_or(default, |f| f.value as u32)
}

fn health_check(t: &Table<'_, '_>, issues: &mut Issues) -> HealthCheckConfig {
    t.deny_unknown(HEALTH_KEYS, issues);
    let path = match t.string("path", issues) {
        Some(f) if !f.value.starts_with('/') => {
            f.fail(issues, "must start with `/`");
            "/healthz".to_owned()
        }
        Some(f) => f.value.to_owned(),
        None => "/healthz".to_owned(),
    };
    HealthCheckConfig {
        path,
        interval: duration(t, "interval", Duration::from_secs(5), issues),
        timeout: duration(t, "timeout", Duration::from_secs(2), issues),
        healthy_threshold: threshold(t, "healthy_threshold", 2, issues),
        unhealthy_threshold: threshold(t, "unhealthy_threshold", 3, issues),
        expect_status: t
            .parsed("expect_status", StatusRanges::parse, issues)
            .map_or_else(
                || StatusRanges::parse("200-399").expect("valid default"),
                |f| f.value,
            ),
        initial_usable: t
            .parsed(
                "initial",
                |s| match s {
                    "usable" => Ok(true),
                    "unusable" => Ok(false),
                    other => Err(format!("`{other}` is not a state; use usable or unusable")),
                },
                issues,
            )
            .is_none_or(|f| f.value),
    }
}

fn outlier(t: &Table<'_, '_>, issues: &mut Issues) -> OutlierConfig {
    t.deny_unknown(OUTLIER_KEYS, issues);
    OutlierConfig {
        consecutive_failures: threshold(t, "consecutive_failures", 5, issues),
        ejection_time: duration(t, "ejection_time", Duration::from_secs(30), issues),
        max_ejected_percent: t
            .int("max_ejected_percent", 0..101, issues)
            .map_or(50, |f| f.value as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        match validate(Path::new("f.toml"), Path::new("."), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.iter().map(ToString::to_string).collect(),
        }
    }

    const MINIMAL: &str = r#"
[[listener]]
name = "http"
bind = "127.0.0.1:0"

[[route]]
upstream = "api"

[upstream.api]
endpoints = [{ address = "127.0.0.1:9001" }]
"#;

    #[test]
    fn minimal_config_gets_defaults() {
        let c = validate(Path::new("f.toml"), Path::new("."), MINIMAL).unwrap();
        assert_eq!(c.server, default_server());
        assert_eq!(c.routes[0].name, "route0");
        assert_eq!(c.routes[0].path_prefix, "/");
        let u = &c.upstreams[0];
        assert_eq!(u.balance, BalanceKind::RoundRobin);
        assert_eq!(u.retries, 1);
        assert!(u.retry_on.connect_failure && u.retry_on.reset && !u.retry_on.status_502);
        assert_eq!(u.endpoints[0].weight, 1);
        assert_eq!(c.admin.bind, Some("127.0.0.1:9901".parse().unwrap()));
    }

    #[test]
    fn every_error_is_reported_with_its_location() {
        let text = "[server]\nworkers = -1\nbogus = 1\n\n[[listener]]\nname = \"http\"\n\n[upstream.api]\nretries = 99\nendpoints = []\n";
        let e = errors(text);
        assert!(
            e.contains(&"f.toml:2:11: server.workers: must be between 0 and 1024".to_string()),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.starts_with("f.toml:3:1: server.bogus: unknown key")),
            "{e:?}"
        );
        assert!(
            e.contains(&"f.toml:5:1: listener[0].bind: required key is missing".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"f.toml:9:11: upstream.api.retries: must be between 0 and 10".to_string()),
            "{e:?}"
        );
        assert!(
            e.contains(&"f.toml:10:13: upstream.api.endpoints: must not be empty".to_string()),
            "{e:?}"
        );
    }

    #[test]
    fn dangling_and_duplicate_names() {
        let text = format!(
            "{MINIMAL}\n[[listener]]\nname = \"http\"\nbind = \"127.0.0.1:0\"\n\n[[route]]\nupstream = \"nope\"\nlisteners = [\"ghost\"]\n"
        );
        let e = errors(&text);
        assert!(
            e.iter()
                .any(|l| l.contains("listener[1].name: duplicate listener name `http`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("route[1].upstream: no upstream is named `nope`")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("route[1].listeners[0]: no listener is named `ghost`")),
            "{e:?}"
        );
    }

    #[test]
    fn hashing_needs_a_key_and_bad_values_are_named() {
        let text = MINIMAL.replace(
            "[upstream.api]",
            "[upstream.api]\nbalance = \"maglev\"\nconnect_timeout = \"2 parsecs\"\nretry_on = [\"sometimes\"]",
        );
        let e = errors(&text);
        // At the table's header, where the key is missing.
        let header = 1 + text.lines().position(|l| l == "[upstream.api]").unwrap();
        let at =
            format!("f.toml:{header}:1: upstream.api.hash_key: required when balance = \"maglev\"");
        assert!(e.iter().any(|l| l.starts_with(&at)), "{at} in {e:?}");
        assert!(
            e.iter()
                .any(|l| l.contains("upstream.api.connect_timeout: unknown duration unit")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|l| l.contains("upstream.api.retry_on[0]: `sometimes` is not a retry cause")),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_name_a_location() {
        let e = errors("[server]\nworkers = \n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("f.toml:2:"), "{e:?}");
    }

    #[test]
    fn syntax_errors_always_name_a_key() {
        // Found by fuzzing: a recovered tree can hold an empty key.
        let bytes = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/fuzz/regressions/config-empty-key.toml"
        ))
        .unwrap();
        // The fuzzer's input: the longest valid UTF-8 prefix of the bytes.
        let text = match std::str::from_utf8(&bytes) {
            Ok(t) => t,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap(),
        };
        let e = errors(text);
        assert!(!e.is_empty());
        for line in &e {
            assert!(!line.contains(": : "), "{line}");
        }
    }

    #[test]
    fn public_admin_needs_a_token() {
        let text = format!("{MINIMAL}\n[admin]\nbind = \"0.0.0.0:9901\"\n");
        let e = errors(&text);
        // At the `[admin]` header, where the key is missing.
        let header = 1 + text.lines().position(|l| l == "[admin]").unwrap();
        let at = format!("f.toml:{header}:1: admin.token: required when admin.bind");
        assert!(e.iter().any(|l| l.starts_with(&at)), "{at} in {e:?}");
    }

    #[test]
    fn hosts() {
        assert_eq!(
            parse_host("API.example.com"),
            Ok(HostPattern::Exact("api.example.com".into()))
        );
        assert_eq!(
            parse_host("*.example.com"),
            Ok(HostPattern::Wildcard(".example.com".into()))
        );
        assert!(parse_host("example.com:80").is_err());
        assert!(parse_host("a.*.com").is_err());
        assert!(parse_host("*").is_err());
    }
}
