//! Route matching never panics, and a match always honours its prefix.
#![no_main]

use std::sync::OnceLock;

use fulcrum::route::{RouteTable, prefix_matches};
use libfuzzer_sys::fuzz_target;

fn table() -> &'static RouteTable {
    static TABLE: OnceLock<RouteTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut text = String::from("[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n");
        for i in 0..40 {
            let host = match i % 4 {
                0 => format!("host = \"h{i}.example.com\"\n"),
                1 => format!("host = \"*.w{i}.example.com\"\n"),
                _ => String::new(),
            };
            text.push_str(&format!("[[route]]\n{host}path_prefix = \"/p{}/q{i}\"\nupstream = \"u\"\n", i % 5));
        }
        text.push_str("[[route]]\nupstream = \"u\"\n[upstream.u]\nendpoints = [{ address = \"127.0.0.1:1\" }]\n");
        let config = fulcrum::config::parse(std::path::Path::new("fuzz.toml"), &text).unwrap();
        RouteTable::build(&config)
    })
}

fuzz_target!(|data: (Option<&str>, &str)| {
    let (host, path) = data;
    if let Some(route) = table().find(0, host, path) {
        assert!(prefix_matches(&route.path_prefix, path), "{} for {path}", route.path_prefix);
    }
});
