//! Route matching, compiled once per snapshot and matched by borrowing.
//!
//! Precedence (SPEC §Routing): an exact host beats a wildcard host, which beats
//! a route without host; within those, the longest segment-wise `path_prefix`
//! wins; a tie goes to the route written first.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{Config, HostPattern};

/// A compiled route: what the request path needs once a route matched.
#[derive(Debug, Clone)]
pub struct Route {
    /// Position in the config file (and in the snapshot's metric handles).
    pub index: usize,
    pub name: Arc<str>,
    /// Index into the snapshot's upstreams.
    pub upstream: usize,
    /// Normalised: "/" or a prefix without trailing slash.
    pub path_prefix: String,
    pub strip_prefix: bool,
}

/// All routes, grouped per listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    /// Per listener, in listener order; looked up by name (there are few).
    listeners: Vec<(String, HostTable)>,
}

/// The routes that apply on one listener, by host class.
#[derive(Debug, Default)]
struct HostTable {
    exact: HashMap<Box<str>, Candidates>,
    /// Keyed by suffix (".example.com"); looked up for each dot-suffix of the
    /// host, longest first, so `*.a.example.com` beats `*.example.com`.
    wildcard: HashMap<Box<str>, Candidates>,
    any: Candidates,
}

/// The routes of one host class: route indices, longest prefix first, then
/// file order; large groups also index their prefixes.
#[derive(Debug, Default)]
struct Candidates {
    ordered: Vec<usize>,
    /// Prefix -> first route written with it; built for groups larger than
    /// [`SCAN_LIMIT`], where one lookup per path segment beats a scan.
    by_prefix: Option<HashMap<Box<str>, usize>>,
}

/// Groups up to this size are scanned; larger ones are indexed.
const SCAN_LIMIT: usize = 8;

/// Longest host name we lower-case on the stack; longer ones cannot be valid.
const MAX_HOST: usize = 255;

impl RouteTable {
    /// Compiles the routes of `config`.
    pub fn build(config: &Config) -> Self {
        let routes: Vec<Route> = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                index,
                name: r.name.as_str().into(),
                upstream: r.upstream,
                path_prefix: r.path_prefix.clone(),
                strip_prefix: r.strip_prefix,
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .enumerate()
            .map(|(li, listener)| {
                let mut table = HostTable::default();
                for (ri, r) in config.routes.iter().enumerate() {
                    if !r.listeners.is_empty() && !r.listeners.contains(&li) {
                        continue;
                    }
                    let group = match &r.host {
                        Some(HostPattern::Exact(h)) => {
                            table.exact.entry(h.as_str().into()).or_default()
                        }
                        Some(HostPattern::Wildcard(suffix)) => {
                            table.wildcard.entry(suffix.as_str().into()).or_default()
                        }
                        None => &mut table.any,
                    };
                    group.ordered.push(ri);
                }
                let prepare = |c: &mut Candidates| c.prepare(&routes);
                table.exact.values_mut().for_each(prepare);
                table.wildcard.values_mut().for_each(prepare);
                prepare(&mut table.any);
                (listener.name.clone(), table)
            })
            .collect();
        Self { routes, listeners }
    }

    /// The index of listener `name`, for [`RouteTable::find`].
    pub fn listener_index(&self, name: &str) -> Option<usize> {
        self.listeners.iter().position(|(n, _)| n == name)
    }

    /// The route for a request on listener `listener` (see
    /// [`RouteTable::listener_index`]) with Host `host` (port allowed) and
    /// `path`.
    pub fn find(&self, listener: usize, host: Option<&str>, path: &str) -> Option<&Route> {
        let table = &self.listeners.get(listener)?.1;
        // Without host routes the Host is not looked at.
        let by_host = !table.exact.is_empty() || !table.wildcard.is_empty();
        if let Some(host) = host.filter(|_| by_host).map(strip_port) {
            let mut buf = [0u8; MAX_HOST];
            if let Some(lower) = lowercase(host, &mut buf) {
                if let Some(c) = table.exact.get(lower)
                    && let Some(r) = self.first_match(c, path)
                {
                    return Some(r);
                }
                // Dot-suffixes after the first label, longest first.
                for (i, _) in lower.match_indices('.').filter(|&(i, _)| i > 0) {
                    if let Some(c) = table.wildcard.get(&lower[i..])
                        && let Some(r) = self.first_match(c, path)
                    {
                        return Some(r);
                    }
                }
            }
        }
        self.first_match(&table.any, path)
    }

    fn first_match(&self, candidates: &Candidates, path: &str) -> Option<&Route> {
        let Some(by_prefix) = &candidates.by_prefix else {
            return candidates
                .ordered
                .iter()
                .map(|&i| &self.routes[i])
                .find(|r| prefix_matches(&r.path_prefix, path));
        };
        // The path itself, then each shorter segment prefix, then "/".
        let mut end = path.len();
        loop {
            if let Some(&i) = by_prefix.get(&path[..end]) {
                return Some(&self.routes[i]);
            }
            match path[..end].rfind('/') {
                Some(i) if i > 0 => end = i,
                _ => break,
            }
        }
        by_prefix.get("/").map(|&i| &self.routes[i])
    }

    /// All routes, in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

impl Candidates {
    /// Orders by prefix length (stable, so ties keep file order) and indexes
    /// large groups.
    fn prepare(&mut self, routes: &[Route]) {
        self.ordered
            .sort_by_key(|&i| std::cmp::Reverse(routes[i].path_prefix.len()));
        if self.ordered.len() > SCAN_LIMIT {
            let mut index = HashMap::new();
            // File order decides among equal prefixes: keep the first.
            let mut in_file_order = self.ordered.clone();
            in_file_order.sort_unstable();
            for i in in_file_order {
                index
                    .entry(routes[i].path_prefix.as_str().into())
                    .or_insert(i);
            }
            self.by_prefix = Some(index);
        }
    }
}

/// Segment-wise prefix match: "/api" matches "/api", "/api/x", not "/apix".
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The host without `:port` (IPv6 literals keep their brackets) and without
/// a trailing dot.
fn strip_port(host: &str) -> &str {
    let host = if host.starts_with('[') {
        host.find(']').map_or(host, |end| &host[..=end])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Lower-cases `host` into `buf` without allocating; `None` when too long.
fn lowercase<'b>(host: &str, buf: &'b mut [u8; MAX_HOST]) -> Option<&'b str> {
    let bytes = host.as_bytes();
    let out = buf.get_mut(..bytes.len())?;
    for (o, b) in out.iter_mut().zip(bytes) {
        *o = b.to_ascii_lowercase();
    }
    // ASCII lower-casing keeps UTF-8 valid.
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(routes: &str) -> RouteTable {
        let text = format!(
            "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:0\"\n[[listener]]\nname = \"b\"\nbind = \"127.0.0.1:0\"\n{routes}\n[upstream.u]\nendpoints = [{{ address = \"127.0.0.1:1\" }}]\n"
        );
        let config = crate::config::parse(Path::new("t.toml"), &text).unwrap();
        RouteTable::build(&config)
    }

    fn name<'a>(t: &'a RouteTable, listener: usize, host: &str, path: &str) -> Option<&'a str> {
        let host = (!host.is_empty()).then_some(host);
        t.find(listener, host, path).map(|r| &*r.name)
    }

    #[test]
    fn precedence() {
        let t = table(
            r#"
[[route]]
name = "any"
upstream = "u"
[[route]]
name = "any-api"
path_prefix = "/api"
upstream = "u"
[[route]]
name = "wild"
host = "*.example.com"
upstream = "u"
[[route]]
name = "exact"
host = "www.Example.com"
path_prefix = "/docs"
upstream = "u"
[[route]]
name = "deep-wild"
host = "*.eu.example.com"
upstream = "u"
"#,
        );
        assert_eq!(name(&t, 0, "www.example.com", "/docs/x"), Some("exact"));
        assert_eq!(name(&t, 0, "WWW.EXAMPLE.COM:8080", "/docs"), Some("exact"));
        // Exact host, but its path does not match: fall to the wildcard.
        assert_eq!(name(&t, 0, "www.example.com", "/other"), Some("wild"));
        assert_eq!(name(&t, 0, "x.eu.example.com", "/"), Some("deep-wild"));
        // The bare name does not match the wildcard.
        assert_eq!(name(&t, 0, "example.com", "/api/v1"), Some("any-api"));
        assert_eq!(name(&t, 0, "", "/apix"), Some("any"));
        assert_eq!(name(&t, 0, "", "/api"), Some("any-api"));
    }

    #[test]
    fn listeners_and_ties() {
        let t = table(
            r#"
[[route]]
name = "first"
path_prefix = "/x"
listeners = ["b"]
upstream = "u"
[[route]]
name = "second"
path_prefix = "/x/"
listeners = ["b"]
upstream = "u"
"#,
        );
        assert_eq!(name(&t, 0, "", "/x"), None);
        assert_eq!(name(&t, 1, "", "/x/y"), Some("first"));
    }

    #[test]
    fn indexed_groups_match_like_scanned_ones() {
        let mut routes = String::new();
        for i in 0..20 {
            routes.push_str(&format!(
                "[[route]]\nname = \"r{i}\"\npath_prefix = \"/a/{}\"\nupstream = \"u\"\n",
                i % 10
            ));
        }
        routes.push_str("[[route]]\nname = \"root\"\nupstream = \"u\"\n[[route]]\nname = \"a\"\npath_prefix = \"/a\"\nupstream = \"u\"\n");
        for i in 0..10 {
            routes.push_str(&format!(
                "[[route]]\nname = \"w{i}\"\nhost = \"*.t{i}.example.com\"\nupstream = \"u\"\n"
            ));
        }
        let t = table(&routes);
        assert_eq!(
            name(&t, 0, "", "/a/3/x/y"),
            Some("r3"),
            "first written wins a tie"
        );
        assert_eq!(name(&t, 0, "", "/a/3"), Some("r3"));
        assert_eq!(name(&t, 0, "", "/a/30"), Some("a"));
        assert_eq!(name(&t, 0, "", "/a"), Some("a"));
        assert_eq!(name(&t, 0, "", "/b"), Some("root"));
        assert_eq!(name(&t, 0, "", "*"), Some("root"));
        assert_eq!(name(&t, 0, "x.T4.example.com", "/"), Some("w4"));
        assert_eq!(name(&t, 0, "t4.example.com", "/"), Some("root"));
    }

    #[test]
    fn ports_and_brackets() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("a.com."), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert!(prefix_matches("/", "/anything"));
        assert!(!prefix_matches("/api", "/apix"));
    }
}
