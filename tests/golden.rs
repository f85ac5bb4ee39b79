//! Golden vectors: 1,000 fixed keys -> endpoint for a fixed config, checked
//! in under tests/golden/, so any change of mapping across versions fails
//! here. After an intended change, regenerate with
//! `FULCRUM_BLESS=1 cargo test --test golden` and say why in the commit.

use std::path::Path;

use fulcrum::balance::hash_key::hash_bytes;
use fulcrum::upstream::Upstream;

const ENDPOINTS: &str = r#"endpoints = [
  { address = "10.0.0.1:8080", weight = 1 },
  { address = "10.0.0.2:8080", weight = 1 },
  { address = "10.0.0.3:8080", weight = 2 },
  { address = "backend-4.internal:8080", weight = 1 },
  { address = "10.0.0.5:9090", weight = 3 },
]"#;

fn config() -> String {
    format!(
        "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n\n[upstream.ring]\nbalance = \"consistent_hash\"\nhash_key = \"header:x-user-id\"\n{ENDPOINTS}\n\n[upstream.table]\nbalance = \"maglev\"\nhash_key = \"header:x-user-id\"\n{ENDPOINTS}\n"
    )
}

fn mapping(upstream: &str) -> String {
    let config = fulcrum::config::parse(Path::new("golden.toml"), &config()).unwrap();
    let u = Upstream::build(
        config.upstream(upstream).unwrap(),
        None,
        &fulcrum::metrics::Metrics::disabled(),
    );
    let mut out = String::new();
    for i in 0..1000 {
        let key = format!("user-{i}");
        let picked = u
            .balancer
            .pick(&u.endpoints, Some(hash_bytes(key.as_bytes())), &[])
            .unwrap();
        out.push_str(&format!("{key} {}\n", u.endpoints[picked].address));
    }
    out
}

fn check(upstream: &str, file: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(file);
    let actual = mapping(upstream);
    if std::env::var_os("FULCRUM_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).expect("golden file (FULCRUM_BLESS=1 writes it)");
    let differ = expected
        .lines()
        .zip(actual.lines())
        .filter(|(e, a)| e != a)
        .take(5)
        .collect::<Vec<_>>();
    assert!(
        differ.is_empty() && expected.lines().count() == 1000,
        "mapping changed: {differ:?}"
    );
}

#[test]
fn consistent_hash_mapping_is_stable() {
    check("ring", "consistent_hash.txt");
}

#[test]
fn maglev_mapping_is_stable() {
    check("table", "maglev.txt");
}
