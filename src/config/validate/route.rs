//! `[[route]]`: names resolved against the listeners and upstreams.

use super::name;
use crate::config::raw::{Field, Issues, Table, element_str};
use crate::config::{HostPattern, ListenerConfig, RouteConfig, UpstreamConfig};

const ROUTE_KEYS: &[&str] = &[
    "name",
    "listeners",
    "host",
    "path_prefix",
    "upstream",
    "strip_prefix",
];

pub(super) fn route(
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
        Some(f) if !f.value.is_ascii() => {
            f.fail(
                issues,
                "must be ASCII (percent-encode the rest, as requests do)",
            );
            None
        }
        // Requests are matched in normal form (`crate::path`): a prefix
        // that is not would never match.
        Some(f) => match crate::path::normalize(f.value) {
            // "/api/" matches like "/api": prefixes are compared segment-wise.
            Ok(None) if f.value.len() > 1 => Some(f.value.trim_end_matches('/').to_owned()),
            Ok(None) => Some("/".to_owned()),
            Ok(Some(normal)) => {
                let why = format!("requests are matched in normal form, where this is `{normal}`");
                f.fail(issues, format!("is not a path in normal form: {why}"));
                None
            }
            Err(_) => {
                let why = "a `%` must be followed by two hex digits";
                f.fail(issues, format!("is not a path in normal form: {why}"));
                None
            }
        },
        None => Some("/".to_owned()),
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

pub(super) fn parse_host(text: &str) -> Result<HostPattern, String> {
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
