//! The schema: walks the spanned document, checks every key, type and range,
//! resolves names, and builds [`Config`]. Every problem is collected; none
//! stops the walk. One file per table: `server.rs` (`[server]`, `[admin]`,
//! `[access_log]`), `listener.rs`, `route.rs`, `upstream.rs` (with its
//! `health_check` and `outlier`); the helpers all of them use are here.

mod discovery;
mod listener;
mod route;
mod server;
mod upstream;

use std::path::Path;
use std::time::Duration;

use toml::de::DeTable;

use super::raw::{self, Field, Issues, Table, key_at};
use super::units::{parse_duration, parse_size};
use super::*;

const ROOT_KEYS: &[&str] = &[
    "server",
    "admin",
    "access_log",
    "listener",
    "route",
    "upstream",
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
    let mut warnings = Issues::default();
    let root = Table::root(&doc);
    root.deny_unknown(ROOT_KEYS, &mut issues);
    let config = walk(&root, path, dir, &mut issues, &mut warnings);
    if issues.is_empty() {
        Ok(Config {
            source: text.to_owned(),
            warnings: locate(warnings.0),
            ..config
        })
    } else {
        Err(locate(issues.0))
    }
}

fn walk(
    root: &Table<'_, '_>,
    path: &Path,
    dir: &Path,
    issues: &mut Issues,
    warnings: &mut Issues,
) -> Config {
    let server = root
        .table("server", issues)
        .map(|t| server::server(&t, issues))
        .unwrap_or_default();
    let access_log = root
        .table("access_log", issues)
        .map(|t| server::access_log(&t, dir, issues))
        .unwrap_or_default();

    let listener_tables = root.tables("listener", issues);
    let listeners: Vec<Field<ListenerConfig>> = listener_tables
        .iter()
        .filter_map(|t| listener::listener(t, dir, issues))
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
                upstream::upstream(name, &t, issues)
            })
            .collect(),
        None => Vec::new(),
    };

    let route_tables = root.tables("route", issues);
    let routes: Vec<Field<RouteConfig>> = route_tables
        .iter()
        .enumerate()
        .filter_map(|(i, t)| route::route(i, t, &listeners, &upstreams, issues))
        .collect();
    check_unique(routes.iter().map(|r| (&r.value.name, r)), "route", issues);
    shadowed_routes(&routes, warnings);
    unused_upstreams(&upstreams, &routes, warnings);

    let admin = root
        .table("admin", issues)
        .map(|t| server::admin(&t, issues))
        .unwrap_or_default();

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
        warnings: Vec::new(),
    }
}

/// Warns of a route that can never match: an earlier route has the same
/// listeners, host and prefix, and so takes every request it would.
fn shadowed_routes(routes: &[Field<RouteConfig>], warnings: &mut Issues) {
    let listeners = |r: &RouteConfig| {
        let mut l = r.listeners.clone();
        l.sort_unstable();
        l
    };
    for (i, later) in routes.iter().enumerate() {
        let r = &later.value;
        let earlier = routes[..i].iter().find(|e| {
            let e = &e.value;
            e.host == r.host && e.path_prefix == r.path_prefix && listeners(e) == listeners(r)
        });
        if let Some(earlier) = earlier {
            warnings.push(
                later.span.clone(),
                later.key.clone(),
                format!(
                    "never matches: route `{}` before it has the same listeners, host and path_prefix",
                    earlier.value.name
                ),
            );
        }
    }
}

/// Warns of an upstream that no route sends requests to.
fn unused_upstreams(
    upstreams: &[Field<UpstreamConfig>],
    routes: &[Field<RouteConfig>],
    warnings: &mut Issues,
) {
    for (i, u) in upstreams.iter().enumerate() {
        if !routes.iter().any(|r| r.value.upstream == i) {
            warnings.push(u.span.clone(), u.key.clone(), "no route uses this upstream");
        }
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

pub(super) fn name(t: &Table<'_, '_>, issues: &mut Issues) -> Option<Field<String>> {
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

pub(super) fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A duration greater than 0, or `default`.
pub(super) fn duration(
    t: &Table<'_, '_>,
    key: &str,
    default: Duration,
    issues: &mut Issues,
) -> Duration {
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
pub(super) fn size(t: &Table<'_, '_>, key: &str, issues: &mut Issues) -> Option<Field<u64>> {
    let field = t.value(key)?;
    match field.value {
        toml::de::DeValue::Integer(_) => {
            t.int(key, 0..i64::MAX, issues).map(|f| f.map(|n| n as u64))
        }
        _ => t.parsed(key, parse_size, issues),
    }
}

#[cfg(test)]
mod tests;
