//! `fulcrum check --diff`: what a reload from one config to another would
//! change, and for each hashed upstream the share of keys that would move.

use std::fmt::Write as _;

use crate::balance::hash_key::hash_bytes;
use crate::config::{BalanceKind, Config, HostPattern, RouteConfig, UpstreamConfig};
use crate::metrics::Metrics;
use crate::upstream::Upstream;

/// Keys routed through both configs to measure the moved share.
pub const SAMPLE_KEYS: usize = 100_000;

/// The changes from `old` to `new`, one per line; "no changes" if none.
pub fn diff(old: &Config, new: &Config) -> String {
    let mut out = String::new();
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
            Some(o) if o.tls != l.tls => lines.push(format!("~ {}: certificates changed", l.name)),
            Some(_) => {}
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
    vec![
        ("balance", u.balance.as_str().to_string()),
        (
            "hash_key",
            u.hash_key.as_ref().map_or("-".into(), ToString::to_string),
        ),
        ("bounded_load", u.bounded_load.to_string()),
        ("protocol", format!("{:?}", u.protocol).to_lowercase()),
        ("connect_timeout", format!("{:?}", u.connect_timeout)),
        ("response_timeout", format!("{:?}", u.response_timeout)),
        ("retries", u.retries.to_string()),
        ("fail_open", u.fail_open.to_string()),
        ("health_check", format!("{:?}", u.health_check.is_some())),
        ("outlier", format!("{:?}", u.outlier.is_some())),
    ]
}

fn upstreams(old: &Config, new: &Config, out: &mut String) {
    let mut lines = Vec::new();
    for u in &new.upstreams {
        let Some(o) = old.upstream(&u.name) else {
            lines.push(format!(
                "+ {} ({}, {} endpoints)",
                u.name,
                u.balance.as_str(),
                u.endpoints.len()
            ));
            continue;
        };
        let mut changes: Vec<String> = settings(o)
            .into_iter()
            .zip(settings(u))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| format!("{} {} -> {}", a.0, a.1, b.1))
            .collect();
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
            let x = a
                .balancer
                .pick(&a.endpoints, key, &[])
                .map(|i| &a.endpoints[i].address);
            let y = b
                .balancer
                .pick(&b.endpoints, key, &[])
                .map(|i| &b.endpoints[i].address);
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
        if !(hashed(u.balance) && hashed(o.balance)) || (o == u) {
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
