//! `fulcrum check --diff`: what a reload from one config to another would
//! change, and for each hashed upstream the share of keys that would move.

use std::fmt::Write as _;

use crate::balance::hash_key::hash_bytes;
use crate::config::{BalanceKind, Config, HostPattern, RetryOn, RouteConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// Keys routed through both configs to measure the moved share.
pub const SAMPLE_KEYS: usize = 100_000;

/// The changes from `old` to `new`, one per line; "no changes" if none.
pub fn diff(old: &Config, new: &Config) -> String {
    let mut out = String::new();
    process(old, new, &mut out);
    listeners(old, new, &mut out);
    routes(old, new, &mut out);
    upstreams(old, new, &mut out);
    moved_keys(old, new, &mut out);
    if out.is_empty() {
        out.push_str("no changes\n");
    }
    out
}

fn section(out: &mut String, title: &str, lines: Vec<String>) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(out, "{title}:");
    for line in lines {
        let _ = writeln!(out, "  {line}");
    }
}

fn listeners(old: &Config, new: &Config, out: &mut String) {
    let mut lines = Vec::new();
    for l in &new.listeners {
        match old.listeners.iter().find(|o| o.name == l.name) {
            None => lines.push(format!("+ {} {}", l.name, l.bind)),
            Some(o) if o.bind != l.bind => {
                lines.push(format!("~ {}: bind {} -> {}", l.name, o.bind, l.bind))
            }
            Some(o) => {
                if o.tls != l.tls {
                    lines.push(format!("~ {}: certificates changed", l.name));
                }
                if o.defer_accept != l.defer_accept {
                    let (from, to) = (o.defer_accept, l.defer_accept);
                    lines.push(format!("~ {}: defer_accept {from} -> {to}", l.name));
                }
            }
        }
    }
    for o in &old.listeners {
        if !new.listeners.iter().any(|l| l.name == o.name) {
            lines.push(format!("- {} {}", o.name, o.bind));
        }
    }
    section(out, "listeners", lines);
}

fn describe_route(config: &Config, r: &RouteConfig) -> String {
    let host = match &r.host {
        Some(HostPattern::Exact(h)) => h.clone(),
        Some(HostPattern::Wildcard(s)) => format!("*{s}"),
        None => "*".into(),
    };
    let on: Vec<&str> = r
        .listeners
        .iter()
        .map(|&i| config.listeners[i].name.as_str())
        .collect();
    format!(
        "{host}{} -> {}{}{}",
        r.path_prefix,
        config.upstreams[r.upstream].name,
        if r.strip_prefix {
            " (strip prefix)"
        } else {
            ""
        },
        if on.is_empty() {
            String::new()
        } else {
            format!(" on {}", on.join(","))
        }
    )
}

fn routes(old: &Config, new: &Config, out: &mut String) {
    let mut lines = Vec::new();
    for r in &new.routes {
        let now = describe_route(new, r);
        match old.routes.iter().find(|o| o.name == r.name) {
            None => lines.push(format!("+ {}: {now}", r.name)),
            Some(o) => {
                let was = describe_route(old, o);
                if was != now {
                    lines.push(format!("~ {}: {was} => {now}", r.name));
                }
            }
        }
    }
    for o in &old.routes {
        if !new.routes.iter().any(|r| r.name == o.name) {
            lines.push(format!("- {}: {}", o.name, describe_route(old, o)));
        }
    }
    section(out, "routes", lines);
}

fn settings(u: &UpstreamConfig) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("balance", u.balance.as_str().to_string()),
        (
            "hash_key",
            u.hash_key.as_ref().map_or("-".into(), ToString::to_string),
        ),
        ("bounded_load", u.bounded_load.to_string()),
        ("protocol", format!("{:?}", u.protocol).to_lowercase()),
        ("connect_timeout", format!("{:?}", u.connect_timeout)),
        ("response_timeout", format!("{:?}", u.response_timeout)),
        ("pool_idle_timeout", format!("{:?}", u.pool_idle_timeout)),
        ("pool_max_idle", u.pool_max_idle.to_string()),
        ("retries", u.retries.to_string()),
        ("retry_on", retry_on(&u.retry_on)),
        ("fail_open", u.fail_open.to_string()),
        ("slow_start", format!("{:?}", u.slow_start)),
        ("health_check", on_off(u.health_check.is_some())),
        ("outlier", on_off(u.outlier.is_some())),
        ("discovery", on_off(u.discovery.is_some())),
    ];
    if let Some(d) = &u.discovery {
        out.extend([
            ("discovery.name", d.name.clone()),
            ("discovery.type", d.kind.as_str().to_string()),
            ("discovery.port", d.port.to_string()),
            ("discovery.weight", d.weight.to_string()),
            (
                "discovery.resolver",
                d.resolver.map_or("system".into(), |r| r.to_string()),
            ),
            ("discovery.min_interval", format!("{:?}", d.min_interval)),
            ("discovery.max_interval", format!("{:?}", d.max_interval)),
            (
                "discovery.max_removed_percent",
                d.max_removed_percent.to_string(),
            ),
        ]);
    }
    if let Some(h) = &u.health_check {
        out.extend([
            ("health_check.path", h.path.clone()),
            ("health_check.interval", format!("{:?}", h.interval)),
            ("health_check.timeout", format!("{:?}", h.timeout)),
            (
                "health_check.healthy_threshold",
                h.healthy_threshold.to_string(),
            ),
            (
                "health_check.unhealthy_threshold",
                h.unhealthy_threshold.to_string(),
            ),
            (
                "health_check.expect_status",
                format!("{:?}", h.expect_status),
            ),
            (
                "health_check.initial",
                (if h.initial_usable {
                    "usable"
                } else {
                    "unusable"
                })
                .into(),
            ),
        ]);
    }
    if let Some(o) = &u.outlier {
        out.extend([
            (
                "outlier.consecutive_failures",
                o.consecutive_failures.to_string(),
            ),
            ("outlier.ejection_time", format!("{:?}", o.ejection_time)),
            (
                "outlier.max_ejected_percent",
                o.max_ejected_percent.to_string(),
            ),
        ]);
    }
    out
}

fn on_off(on: bool) -> String {
    (if on { "on" } else { "off" }).into()
}

fn retry_on(r: &RetryOn) -> String {
    let causes = [
        (r.connect_failure, "connect_failure"),
        (r.reset, "reset"),
        (r.status_502, "502"),
        (r.status_503, "503"),
        (r.status_504, "504"),
        (r.timeout, "timeout"),
    ];
    let on: Vec<&str> = causes.iter().filter(|c| c.0).map(|c| c.1).collect();
    format!("[{}]", on.join(", "))
}

/// The changed settings of two sets, as `key old -> new`; keys on one side
/// only are shown against `-`.
fn changed(old: &[(&'static str, String)], new: &[(&'static str, String)]) -> Vec<String> {
    let value = |set: &[(&str, String)], key: &str| {
        set.iter()
            .find(|(k, _)| *k == key)
            .map_or_else(|| "-".to_string(), |(_, v)| v.clone())
    };
    let mut keys: Vec<&str> = old.iter().map(|(k, _)| *k).collect();
    keys.extend(
        new.iter()
            .map(|(k, _)| *k)
            .filter(|k| !old.iter().any(|(o, _)| o == k)),
    );
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (value(old, k), value(new, k));
            (a != b).then(|| format!("{k} {a} -> {b}"))
        })
        .collect()
}

/// `[server]`, `[admin]` and `[access_log]`: what changes, and what only a
/// restart applies (`server.workers`, `[admin]`, `[access_log]`).
fn process(old: &Config, new: &Config, out: &mut String) {
    let server = |c: &Config| {
        let s = &c.server;
        vec![
            ("server.workers", s.workers.to_string()),
            (
                "server.shutdown_timeout",
                format!("{:?}", s.shutdown_timeout),
            ),
            (
                "server.header_read_timeout",
                format!("{:?}", s.header_read_timeout),
            ),
            (
                "server.body_read_timeout",
                format!("{:?}", s.body_read_timeout),
            ),
            ("server.idle_timeout", format!("{:?}", s.idle_timeout)),
            ("server.max_connections", s.max_connections.to_string()),
            ("server.max_header_bytes", s.max_header_bytes.to_string()),
            ("server.max_request_body", s.max_request_body.to_string()),
        ]
    };
    let restart_only = |c: &Config| {
        vec![
            ("server.workers", c.server.workers.to_string()),
            (
                "admin.bind",
                c.admin.bind.map_or("\"\" (off)".into(), |a| a.to_string()),
            ),
            (
                "admin.token",
                (if c.admin.token.is_some() { "set" } else { "-" }).into(),
            ),
            ("access_log.enabled", c.access_log.enabled.to_string()),
            (
                "access_log.format",
                format!("{:?}", c.access_log.format).to_lowercase(),
            ),
            (
                "access_log.path",
                c.access_log
                    .path
                    .as_ref()
                    .map_or("- (stdout)".into(), |p| p.display().to_string()),
            ),
        ]
    };
    let restart = changed(&restart_only(old), &restart_only(new));
    let applied: Vec<String> = changed(&server(old), &server(new))
        .into_iter()
        .filter(|line| !line.starts_with("server.workers "))
        .collect();
    section(
        out,
        "settings (applied to new connections and requests)",
        applied,
    );
    let restart = restart
        .into_iter()
        .map(|line| format!("{line} (a reload does not apply it: restart)"))
        .collect();
    section(out, "settings only a restart applies", restart);
}

fn upstreams(old: &Config, new: &Config, out: &mut String) {
    let mut lines = Vec::new();
    for u in &new.upstreams {
        let Some(o) = old.upstream(&u.name) else {
            lines.push(match &u.discovery {
                Some(d) => format!(
                    "+ {} ({}, endpoints from DNS: {} {})",
                    u.name,
                    u.balance.as_str(),
                    d.kind.as_str(),
                    d.name
                ),
                None => format!(
                    "+ {} ({}, {} endpoints)",
                    u.name,
                    u.balance.as_str(),
                    u.endpoints.len()
                ),
            });
            continue;
        };
        let mut changes = changed(&settings(o), &settings(u));
        for e in &u.endpoints {
            match o.endpoints.iter().find(|x| x.address == e.address) {
                None => changes.push(format!("+ endpoint {} (weight {})", e.address, e.weight)),
                Some(x) if x.weight != e.weight => changes.push(format!(
                    "~ endpoint {}: weight {} -> {}",
                    e.address, x.weight, e.weight
                )),
                Some(_) => {}
            }
        }
        for x in &o.endpoints {
            if !u.endpoints.iter().any(|e| e.address == x.address) {
                changes.push(format!("- endpoint {}", x.address));
            }
        }
        if !changes.is_empty() {
            lines.push(format!("~ {}: {}", u.name, changes.join("; ")));
        }
    }
    for o in &old.upstreams {
        if new.upstream(&o.name).is_none() {
            lines.push(format!("- {}", o.name));
        }
    }
    section(out, "upstreams", lines);
}

/// The endpoints each discovered upstream of a running instance uses now,
/// from its /status document: a reload keeps them while the upstream's
/// discovery table stays the same.
pub fn discovered(status: &serde_json::Value) -> String {
    let mut lines = Vec::new();
    let Some(upstreams) = status["upstreams"].as_object() else {
        return String::new();
    };
    for (name, u) in upstreams {
        let d = &u["discovery"];
        if d.is_null() {
            continue;
        }
        let endpoints: Vec<String> = u["endpoints"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        format!(
                            "{} (weight {})",
                            e["address"].as_str().unwrap_or("?"),
                            e["weight"]
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let error = d["last_error"]
            .as_str()
            .map_or(String::new(), |e| format!("; last error: {e}"));
        let held = if d["held"] == true {
            "; an answer is held"
        } else {
            ""
        };
        lines.push(format!(
            "{name} ({} {}): {}{error}{held}",
            d["type"].as_str().unwrap_or("?"),
            d["name"].as_str().unwrap_or("?"),
            if endpoints.is_empty() {
                "none yet".to_string()
            } else {
                endpoints.join(", ")
            },
        ));
    }
    let mut out = String::new();
    section(
        &mut out,
        "discovered endpoints in use (running instance)",
        lines,
    );
    out
}

/// Whether the two build the same balancer: the same algorithm, key,
/// bound and endpoints with their weights (health checks, timeouts and the
/// like move no key).
fn same_balancer(a: &UpstreamConfig, b: &UpstreamConfig) -> bool {
    a.balance == b.balance
        && a.hash_key == b.hash_key
        && a.bounded_load == b.bounded_load
        && a.endpoints == b.endpoints
        && a.discovery == b.discovery
}

fn hashed(kind: BalanceKind) -> bool {
    matches!(kind, BalanceKind::ConsistentHash | BalanceKind::Maglev)
}

/// The share of keys whose endpoint differs between the two builds of an
/// upstream, over [`SAMPLE_KEYS`] fixed keys (standard error under 0.2
/// percentage points).
pub fn moved_share(old: &UpstreamConfig, new: &UpstreamConfig) -> f64 {
    let metrics = Metrics::disabled();
    let (a, b) = (
        Upstream::build(old, None, &metrics),
        Upstream::build(new, None, &metrics),
    );
    let moved = (0..SAMPLE_KEYS)
        .filter(|i| {
            let key = Some(hash_bytes(format!("diff-key-{i}").as_bytes()));
            let x = a.pick(key, &[]).map(|i| &a.endpoints[i].address);
            let y = b.pick(key, &[]).map(|i| &b.endpoints[i].address);
            x != y
        })
        .count();
    moved as f64 / SAMPLE_KEYS as f64
}

fn moved_keys(old: &Config, new: &Config, out: &mut String) {
    let mut lines = Vec::new();
    for u in &new.upstreams {
        let Some(o) = old.upstream(&u.name) else {
            continue;
        };
        if !(hashed(u.balance) && hashed(o.balance)) || same_balancer(o, u) {
            continue;
        }
        let share = moved_share(o, u);
        lines.push(format!(
            "{} ({}): {:.2}% of keys",
            u.name,
            u.balance.as_str(),
            share * 100.0
        ));
    }
    section(out, "keys that would move", lines);
}
