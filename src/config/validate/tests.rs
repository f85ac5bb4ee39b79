//! The schema's unit tests: every error with its location.

use super::route::parse_host;
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
    assert_eq!(c.server, ServerConfig::default());
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
fn keys_without_effect_are_errors_at_the_key() {
    let text = MINIMAL.replace(
        "[upstream.api]",
        "[upstream.api]\nhash_key = \"header:x-user\"\nbounded_load = 1.25",
    );
    let e = errors(&text);
    let line = |key: &str| 1 + text.lines().position(|l| l.starts_with(key)).unwrap();
    let hash_key = format!(
        "f.toml:{}:12: upstream.api.hash_key: applies only to balance = \"consistent_hash\" or \"maglev\"",
        line("hash_key")
    );
    let bounded = format!(
        "f.toml:{}:16: upstream.api.bounded_load: applies only to balance = \"consistent_hash\"",
        line("bounded_load")
    );
    assert_eq!(e, [hash_key, bounded]);
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

#[test]
fn a_shadowed_route_and_an_unused_upstream_are_warnings() {
    let text = format!(
        "{MINIMAL}[[route]]\nname = \"again\"\nupstream = \"api\"\n\
         [upstream.spare]\nendpoints = [{{ address = \"127.0.0.1:9002\" }}]\n"
    );
    let c = validate(Path::new("f.toml"), Path::new("."), &text).unwrap();
    let line = |start: &str| 1 + text.lines().position(|l| l.starts_with(start)).unwrap();
    let warnings: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        [
            format!(
                "f.toml:{}:8: route[1]: never matches: route `route0` before it has the same listeners, host and path_prefix",
                line("name = \"again\"")
            ),
            format!(
                "f.toml:{}:11: upstream.spare: no route uses this upstream",
                line("[upstream.spare]")
            ),
        ]
    );
    // A different prefix, host or listener set is not shadowed.
    let apart = text.replace(
        "name = \"again\"",
        "name = \"again\"\npath_prefix = \"/v2\"",
    );
    let c = validate(Path::new("f.toml"), Path::new("."), &apart).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
}

const DISCOVERED: &str = r#"
[[listener]]
name = "http"
bind = "127.0.0.1:0"

[[route]]
upstream = "api"

[upstream.api]
slow_start = "30s"

[upstream.api.discovery]
name = "api.service.consul"
port = 8080
"#;

#[test]
fn discovery_gets_defaults_and_needs_exactly_one_source_of_endpoints() {
    let c = validate(Path::new("f.toml"), Path::new("."), DISCOVERED).unwrap();
    let u = &c.upstreams[0];
    assert!(u.endpoints.is_empty());
    assert_eq!(u.slow_start, std::time::Duration::from_secs(30));
    let d = u.discovery.as_ref().unwrap();
    assert_eq!((d.kind, d.port, d.weight), (DiscoveryKind::A, 8080, 1));
    assert_eq!(d.resolver, None);
    assert_eq!(d.min_interval, std::time::Duration::from_secs(1));
    assert_eq!(d.max_interval, std::time::Duration::from_secs(30));
    assert_eq!(d.max_removed_percent, 50);

    let both = DISCOVERED.replace(
        "slow_start = \"30s\"",
        "endpoints = [{ address = \"127.0.0.1:1\" }]",
    );
    assert_eq!(
        errors(&both),
        ["f.toml:9:1: upstream.api: needs exactly one of `endpoints` and a `discovery` table"]
    );
    let neither = MINIMAL.replace("endpoints = [{ address = \"127.0.0.1:9001\" }]", "");
    assert_eq!(
        errors(&neither),
        ["f.toml:9:1: upstream.api: needs exactly one of `endpoints` and a `discovery` table"]
    );
}

#[test]
fn discovery_errors_name_their_key() {
    let cases = [
        (
            "port = 8080",
            "",
            "upstream.api.discovery.port: required when type = \"a\"",
        ),
        (
            "port = 8080",
            "type = \"srv\"\nport = 1",
            "upstream.api.discovery.port: not allowed when type = \"srv\"",
        ),
        (
            "port = 8080",
            "type = \"mx\"\nport = 1",
            "upstream.api.discovery.type: `mx` is not a discovery type",
        ),
        (
            "name = \"api.service.consul\"",
            "name = \"a b\"",
            "upstream.api.discovery.name: `a b` is not a DNS name",
        ),
        (
            "port = 8080",
            "port = 8080\nresolver = \"dns\"",
            "upstream.api.discovery.resolver: `dns` is not IP:port",
        ),
        (
            "port = 8080",
            "port = 8080\nmin_interval = \"1m\"",
            "min_interval must not be above max_interval",
        ),
        (
            "port = 8080",
            "port = 8080\nmax_removed_percent = 101",
            "upstream.api.discovery.max_removed_percent",
        ),
        (
            "slow_start = \"30s\"",
            "slow_start = \"2h\"",
            "upstream.api.slow_start: must be at most 1h",
        ),
    ];
    for (from, to, expected) in cases {
        let text = DISCOVERED.replace(from, to);
        let errors = errors(&text);
        assert!(
            errors.len() == 1 && errors[0].starts_with("f.toml:") && errors[0].contains(expected),
            "{to}: {errors:?}"
        );
    }
}

/// Requests are matched in normal form (`crate::path`): a prefix that is
/// not could never match, and says what to write.
#[test]
fn a_path_prefix_not_in_normal_form_is_an_error() {
    for (prefix, why) in [
        (
            "/api/../admin",
            "requests are matched in normal form, where this is `/admin`",
        ),
        (
            "/%7euser",
            "requests are matched in normal form, where this is `/~user`",
        ),
        ("/100%", "a `%` must be followed by two hex digits"),
    ] {
        let text = MINIMAL.replace(
            "upstream = \"api\"\n",
            &format!("path_prefix = \"{prefix}\"\nupstream = \"api\"\n"),
        );
        assert_eq!(
            errors(&text),
            [format!(
                "f.toml:7:15: route[0].path_prefix: is not a path in normal form: {why}"
            )]
        );
    }
    let text = MINIMAL.replace(
        "upstream = \"api\"\n",
        "path_prefix = \"/café\"\nupstream = \"api\"\n",
    );
    assert_eq!(
        errors(&text),
        [
            "f.toml:7:15: route[0].path_prefix: must be ASCII (percent-encode the rest, as requests do)"
        ]
    );
    // An escaped reserved character and repeated slashes are kept.
    for prefix in ["/a%2Fb", "//x", "/files/.well-known"] {
        let text = MINIMAL.replace(
            "upstream = \"api\"\n",
            &format!("path_prefix = \"{prefix}\"\nupstream = \"api\"\n"),
        );
        assert_eq!(errors(&text), Vec::<String>::new(), "{prefix}");
    }
}
