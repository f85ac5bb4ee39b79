//! `[upstream.NAME.discovery]`: endpoints from DNS (SPEC §Discovery).

use std::net::SocketAddr;

use super::duration;
use crate::config::defaults::*;
use crate::config::raw::{Issues, Table};
use crate::config::{DiscoveryConfig, DiscoveryKind, MAX_WEIGHT};

const DISCOVERY_KEYS: &[&str] = &[
    "name",
    "type",
    "port",
    "weight",
    "resolver",
    "min_interval",
    "max_interval",
    "max_removed_percent",
];

pub(super) fn discovery(t: &Table<'_, '_>, issues: &mut Issues) -> Option<DiscoveryConfig> {
    t.deny_unknown(DISCOVERY_KEYS, issues);
    let name = t.required_string("name", issues);
    if let Some(name) = &name
        && let Err(why) = check_dns_name(name.value)
    {
        name.fail(issues, why);
    }
    let kind = t
        .parsed(
            "type",
            |s| match s {
                "a" => Ok(DiscoveryKind::A),
                "srv" => Ok(DiscoveryKind::Srv),
                other => Err(format!("`{other}` is not a discovery type; use a or srv")),
            },
            issues,
        )
        .map_or(DiscoveryKind::A, |f| f.value);
    let port = t.int("port", 1..65536, issues);
    let weight = t.int("weight", 1..(i64::from(MAX_WEIGHT) + 1), issues);
    match kind {
        DiscoveryKind::A if port.is_none() && t.value("port").is_none() => {
            issues.push(
                t.span.clone(),
                format!("{}.port", t.path),
                "required when type = \"a\"",
            );
        }
        DiscoveryKind::Srv => {
            for (key, field) in [("port", &port), ("weight", &weight)] {
                if let Some(f) = field {
                    f.fail(
                        issues,
                        format!("not allowed when type = \"srv\": each record gives its {key}"),
                    );
                }
            }
        }
        DiscoveryKind::A => {}
    }
    let resolver = match t.string("resolver", issues) {
        Some(f) if f.value.is_empty() => None,
        Some(f) => match f.value.parse::<SocketAddr>() {
            Ok(address) => Some(address),
            Err(_) => {
                f.fail(
                    issues,
                    format!(
                        "`{}` is not IP:port (\"\" = the system's resolvers)",
                        f.value
                    ),
                );
                None
            }
        },
        None => None,
    };
    let min_interval = duration(t, "min_interval", DEFAULT_DISCOVERY_MIN_INTERVAL, issues);
    let max_interval = duration(t, "max_interval", DEFAULT_DISCOVERY_MAX_INTERVAL, issues);
    if min_interval > max_interval
        && let Some(f) = t.value("max_interval").or_else(|| t.value("min_interval"))
    {
        f.fail(issues, "min_interval must not be above max_interval");
    }
    let max_removed_percent = t
        .int("max_removed_percent", 0..101, issues)
        .map_or(DEFAULT_MAX_REMOVED_PERCENT, |f| f.value as u32);
    Some(DiscoveryConfig {
        name: name?.value.to_owned(),
        kind,
        port: port.map_or(0, |f| f.value as u16),
        weight: weight.map_or(DEFAULT_DISCOVERY_WEIGHT, |f| f.value as u32),
        resolver,
        min_interval,
        max_interval,
        max_removed_percent,
    })
}

/// A DNS name: dot-separated labels of 1 to 63 letters, digits, `-` or `_`
/// (SRV names begin with `_service._proto`), 253 characters at most; a
/// final dot makes it fully qualified.
fn check_dns_name(name: &str) -> Result<(), String> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    let label_ok = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    };
    if !bare.is_empty() && bare.len() <= 253 && bare.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!("`{name}` is not a DNS name"))
    }
}

#[cfg(test)]
mod tests {
    use super::check_dns_name;

    #[test]
    fn dns_names() {
        for good in [
            "api",
            "api.service.consul",
            "_http._tcp.web.ns.svc.cluster.local.",
            "a-b.c",
        ] {
            assert!(check_dns_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "a..b", "a b", "a/b", "a:1", &"a".repeat(64)] {
            assert!(check_dns_name(bad).is_err(), "{bad}");
        }
    }
}
