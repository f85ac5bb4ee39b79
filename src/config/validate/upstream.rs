//! `[upstream.NAME]` with its endpoints, `health_check` and `outlier`.

use std::net::SocketAddr;

use http::HeaderName;

use super::{duration, valid_name};
use crate::config::defaults::*;
use crate::config::raw::{Field, Issues, Table, element_str};
use crate::config::units::StatusRanges;
use crate::config::{
    BalanceKind, EndpointConfig, HashKey, HealthCheckConfig, MAX_WEIGHT, OutlierConfig, Protocol,
    RetryOn, UpstreamConfig,
};

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
    "slow_start",
    "endpoints",
    "discovery",
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

pub(super) fn upstream(
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
    let (balance, hash_key, bounded_load) = balancing(t, issues);
    let protocol = protocol(t, issues);
    let retry_on = retry_on(t, issues);
    let discovery = t
        .table("discovery", issues)
        .map(|d| super::discovery::discovery(&d, issues));
    let endpoints = match (t.value("endpoints"), &discovery) {
        (None, None) | (Some(_), Some(_)) => {
            // At the table's header: neither key is wrong on its own.
            issues.push(
                t.span.clone(),
                t.path.clone(),
                "needs exactly one of `endpoints` and a `discovery` table",
            );
            // Recorded; routes to it still resolve (no second error).
            Some(Vec::new())
        }
        (None, Some(_)) => Some(Vec::new()),
        (Some(_), None) => endpoints(t, issues),
    };
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
            connect_timeout: duration(t, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, issues),
            response_timeout: duration(t, "response_timeout", DEFAULT_RESPONSE_TIMEOUT, issues),
            pool_idle_timeout: duration(t, "pool_idle_timeout", DEFAULT_POOL_IDLE_TIMEOUT, issues),
            pool_max_idle: t
                .int("pool_max_idle", 0..65537, issues)
                .map_or(DEFAULT_POOL_MAX_IDLE, |f| f.value as usize),
            retries: t
                .int("retries", 0..11, issues)
                .map_or(DEFAULT_RETRIES, |f| f.value as u32),
            retry_on,
            fail_open: t.bool("fail_open", issues).unwrap_or(false),
            endpoints: endpoints?,
            discovery: discovery.flatten(),
            slow_start: optional_duration(t, "slow_start", issues),
            health_check,
            outlier,
        },
        span: name.span,
        key: t.path.clone(),
    })
}

/// `balance`, `hash_key` (required by the hashing balancers, refused by
/// the others) and `bounded_load` (consistent hashing only).
fn balancing(t: &Table<'_, '_>, issues: &mut Issues) -> (BalanceKind, Option<HashKey>, f64) {
    let balance = t
        .parsed("balance", parse_balance, issues)
        .map_or(DEFAULT_BALANCE, |f| f.value);
    let hashes = matches!(balance, BalanceKind::ConsistentHash | BalanceKind::Maglev);
    let hash_key = match t.parsed("hash_key", parse_hash_key, issues) {
        Some(f) if !hashes => {
            f.fail(
                issues,
                "applies only to balance = \"consistent_hash\" or \"maglev\"",
            );
            None
        }
        other => other.map(|f| f.value),
    };
    if hashes && hash_key.is_none() && t.value("hash_key").is_none() {
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
    (balance, hash_key, bounded_load)
}

/// `protocol`: http1 (the default) or http2.
fn protocol(t: &Table<'_, '_>, issues: &mut Issues) -> Protocol {
    t.parsed(
        "protocol",
        |s| match s {
            "http1" => Ok(Protocol::Http1),
            "http2" => Ok(Protocol::Http2),
            other => Err(format!("`{other}` is not a protocol; use http1 or http2")),
        },
        issues,
    )
    .map_or(DEFAULT_PROTOCOL, |f| f.value)
}

/// `retry_on`: the causes listed, or connect failures and resets.
fn retry_on(t: &Table<'_, '_>, issues: &mut Issues) -> RetryOn {
    let Some(list) = t.array("retry_on", issues) else {
        return RetryOn::default();
    };
    let mut on = RetryOn::none();
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

pub(super) fn parse_balance(s: &str) -> Result<BalanceKind, String> {
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

pub(super) fn parse_hash_key(s: &str) -> Result<HashKey, String> {
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

/// A duration that may be 0 (off), at most an hour.
fn optional_duration(t: &Table<'_, '_>, key: &str, issues: &mut Issues) -> std::time::Duration {
    match t.parsed(key, crate::config::units::parse_duration, issues) {
        Some(f) if f.value > std::time::Duration::from_secs(3600) => {
            f.fail(issues, "must be at most 1h");
            DEFAULT_SLOW_START
        }
        Some(f) => f.value,
        None => DEFAULT_SLOW_START,
    }
}

fn endpoints(t: &Table<'_, '_>, issues: &mut Issues) -> Option<Vec<EndpointConfig>> {
    let list = t.array("endpoints", issues)?;
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
        let e = Table::inline(table, element.span.clone(), element.key.clone());
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
            priority: 0,
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

/// A count of 1 to 1000, or `default`.
fn threshold(t: &Table<'_, '_>, key: &str, default: u32, issues: &mut Issues) -> u32 {
    t.int(key, 1..1001, issues)
        .map_or(default, |f| f.value as u32)
}

fn health_check(t: &Table<'_, '_>, issues: &mut Issues) -> HealthCheckConfig {
    t.deny_unknown(HEALTH_KEYS, issues);
    let path = match t.string("path", issues) {
        Some(f) if !f.value.starts_with('/') => {
            f.fail(issues, "must start with `/`");
            DEFAULT_HEALTH_PATH.to_owned()
        }
        Some(f) => f.value.to_owned(),
        None => DEFAULT_HEALTH_PATH.to_owned(),
    };
    HealthCheckConfig {
        path,
        interval: duration(t, "interval", DEFAULT_HEALTH_INTERVAL, issues),
        timeout: duration(t, "timeout", DEFAULT_HEALTH_TIMEOUT, issues),
        healthy_threshold: threshold(t, "healthy_threshold", DEFAULT_HEALTHY_THRESHOLD, issues),
        unhealthy_threshold: threshold(
            t,
            "unhealthy_threshold",
            DEFAULT_UNHEALTHY_THRESHOLD,
            issues,
        ),
        expect_status: t
            .parsed("expect_status", StatusRanges::parse, issues)
            .map_or_else(
                || StatusRanges::parse(DEFAULT_EXPECT_STATUS).expect("valid default"),
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
        consecutive_failures: threshold(
            t,
            "consecutive_failures",
            DEFAULT_CONSECUTIVE_FAILURES,
            issues,
        ),
        ejection_time: duration(t, "ejection_time", DEFAULT_EJECTION_TIME, issues),
        max_ejected_percent: t
            .int("max_ejected_percent", 0..101, issues)
            .map_or(DEFAULT_MAX_EJECTED_PERCENT, |f| f.value as u32),
    }
}
