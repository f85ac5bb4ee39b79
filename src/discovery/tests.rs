use std::time::Duration;

use super::*;
use crate::config::{DiscoveryKind, EndpointConfig};

fn config(max_removed_percent: u32) -> DiscoveryConfig {
    DiscoveryConfig {
        name: "api.test".into(),
        kind: DiscoveryKind::A,
        port: 80,
        weight: 1,
        resolver: None,
        min_interval: Duration::from_secs(1),
        max_interval: Duration::from_secs(30),
        max_removed_percent,
    }
}

fn list(hosts: &[u8]) -> Vec<EndpointConfig> {
    hosts
        .iter()
        .map(|h| EndpointConfig {
            address: format!("10.0.0.{h}:80"),
            weight: 1,
            priority: 0,
        })
        .collect()
}

fn discovery(max_removed_percent: u32) -> Discovery {
    Discovery::new(
        "api",
        config(max_removed_percent),
        None,
        &Metrics::disabled(),
    )
}

#[test]
fn first_answer_applies_and_the_same_answer_changes_nothing() {
    let d = discovery(50);
    assert!(!d.is_ready());
    assert_eq!(d.consider(Ok(list(&[1, 2, 3]))), Outcome::Changed);
    assert!(d.is_ready());
    assert_eq!(d.consider(Ok(list(&[1, 2, 3]))), Outcome::Unchanged);
    assert_eq!(d.endpoints(), Some(list(&[1, 2, 3])));
}

#[test]
fn failures_and_empty_answers_change_nothing() {
    let d = discovery(50);
    assert_eq!(d.consider(Err("SERVFAIL".into())), Outcome::Failed);
    assert_eq!(d.endpoints(), None);
    d.consider(Ok(list(&[1, 2])));
    for bad in [
        Err("timeout".to_string()),
        Ok(Vec::new()),
        Err("NXDOMAIN".into()),
    ] {
        assert_eq!(d.consider(bad), Outcome::Failed);
        assert_eq!(d.endpoints(), Some(list(&[1, 2])));
    }
    let status = d.status();
    assert_eq!(status.last_error.as_deref(), Some("NXDOMAIN"));
    assert!(status.last_success.is_some());
    // A success clears the error.
    d.consider(Ok(list(&[1, 2])));
    assert_eq!(d.status().last_error, None);
}

#[test]
fn a_mass_removal_is_held_until_three_answers_agree() {
    let d = discovery(50);
    d.consider(Ok(list(&[1, 2, 3, 4])));
    // Removing 2 of 4 (50%) is allowed; 3 of 4 is held.
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Held);
    assert!(d.status().held);
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Held);
    // A different answer starts the count again.
    assert_eq!(d.consider(Ok(list(&[2]))), Outcome::Held);
    assert_eq!(d.consider(Ok(list(&[2]))), Outcome::Held);
    assert_eq!(d.endpoints(), Some(list(&[1, 2, 3, 4])));
    assert_eq!(d.consider(Ok(list(&[2]))), Outcome::Changed);
    assert_eq!(d.endpoints(), Some(list(&[2])));
    assert!(!d.status().held);
    // An answer back within bounds drops what was held.
    let d = discovery(50);
    d.consider(Ok(list(&[1, 2, 3, 4])));
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Held);
    assert_eq!(d.consider(Ok(list(&[1, 2, 3]))), Outcome::Changed);
    assert!(!d.status().held);
    assert_eq!(d.consider(Ok(list(&[1, 2, 3]))), Outcome::Unchanged);
}

#[test]
fn a_failure_between_held_answers_does_not_break_the_row() {
    let d = discovery(0);
    d.consider(Ok(list(&[1, 2])));
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Held);
    assert_eq!(d.consider(Err("timeout".into())), Outcome::Failed);
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Held);
    assert_eq!(d.consider(Ok(list(&[1]))), Outcome::Changed);
}

#[test]
fn the_next_resolution_follows_the_ttl_within_bounds_and_backs_off() {
    let d = discovery(50);
    assert_eq!(
        d.next_in(Some(Duration::from_millis(10))),
        Duration::from_secs(1)
    );
    assert_eq!(
        d.next_in(Some(Duration::from_secs(7))),
        Duration::from_secs(7)
    );
    assert_eq!(
        d.next_in(Some(Duration::from_secs(300))),
        Duration::from_secs(30)
    );
    let backoff: Vec<u64> = (0..7)
        .map(|_| {
            d.consider(Err("SERVFAIL".into()));
            d.next_in(None).as_secs()
        })
        .collect();
    assert_eq!(backoff, [1, 2, 4, 8, 16, 30, 30]);
}

#[test]
fn the_first_answer_of_a_changed_table_replaces_what_a_reload_kept() {
    let d = Discovery::new(
        "api",
        config(50),
        Some(list(&[1, 2, 3, 4])),
        &Metrics::disabled(),
    );
    assert!(d.is_ready());
    assert_eq!(d.consider(Ok(list(&[9]))), Outcome::Changed);
    assert_eq!(d.consider(Ok(list(&[9]))), Outcome::Unchanged);
}
