//! Maglev: a lookup table with O(1) picks and minimal disruption.
//!
//! The table has M entries, M = 65537, or the next prime at or above
//! 100 x sum(weights) / min(weight) when that is larger. Each usable endpoint
//! (ordered by address) walks its own permutation of the table,
//! `offset = XXH3-64(address, seed 1) mod M`,
//! `skip = XXH3-64(address, seed 2) mod (M - 1) + 1`, claiming free entries;
//! an endpoint of weight w claims on w of every max-weight rounds (Envoy's
//! weighted Maglev). A key picks entry `key x M >> 64`.
//!
//! The table covers the usable endpoints. It is rebuilt off the request path
//! when usability changes and swapped in atomically; until then, an entry
//! whose endpoint became unusable (or was tried) gives way to the next
//! entries of the table.

use arc_swap::ArcSwap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{RoundRobin, eligible};
use crate::config::HashKey;
use crate::upstream::Endpoint;

/// The smallest table size.
pub const MIN_TABLE_SIZE: u64 = 65537;

#[derive(Debug)]
pub struct Maglev {
    pub key: Option<HashKey>,
    table: ArcSwap<MaglevTable>,
    fallback: RoundRobin,
}

/// One built table: entry -> endpoint index.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    entries: Vec<u32>,
}

impl Maglev {
    pub fn new(endpoints: &[Endpoint], key: Option<HashKey>) -> Self {
        Self {
            key,
            table: ArcSwap::from_pointee(MaglevTable::build(endpoints, |i| {
                endpoints[i].state.is_usable()
            })),
            fallback: RoundRobin::new(endpoints),
        }
    }

    /// Rebuilds the table over the endpoints usable now and swaps it in.
    pub fn rebuild(&self, endpoints: &[Endpoint]) {
        let table = MaglevTable::build(endpoints, |i| endpoints[i].state.is_usable());
        self.table.store(std::sync::Arc::new(table));
    }

    pub fn pick(&self, endpoints: &[Endpoint], key: Option<u64>, tried: &[usize]) -> Option<usize> {
        let Some(key) = key else {
            return self.fallback.pick(endpoints, tried);
        };
        let table = self.table.load();
        let found = table.lookup_with(key, |i| eligible(endpoints, i, tried));
        // Endpoints may have become usable since the table was built; any
        // usable one is better than a 503.
        found.or_else(|| self.fallback.pick(endpoints, tried))
    }

    /// The table in use now.
    pub fn table(&self) -> std::sync::Arc<MaglevTable> {
        self.table.load_full()
    }
}

impl MaglevTable {
    /// Builds the table over the endpoints `include`d with weight > 0.
    pub fn build(endpoints: &[Endpoint], include: impl Fn(usize) -> bool) -> Self {
        let mut members: Vec<usize> = (0..endpoints.len())
            .filter(|&i| endpoints[i].weight > 0 && include(i))
            .collect();
        if members.is_empty() {
            return Self {
                entries: Vec::new(),
            };
        }
        members.sort_by(|&a, &b| endpoints[a].address.cmp(&endpoints[b].address));
        let weight = |i: usize| u64::from(endpoints[i].weight);
        let sum: u64 = members.iter().map(|&i| weight(i)).sum();
        let min = members.iter().map(|&i| weight(i)).min().unwrap_or(1);
        let max = members.iter().map(|&i| weight(i)).max().unwrap_or(1);
        let m = MIN_TABLE_SIZE.max(next_prime((100 * sum).div_ceil(min)));

        struct Walker {
            endpoint: u32,
            weight: u64,
            next: u64,
            skip: u64,
            target: u64,
        }
        let mut walkers: Vec<Walker> = members
            .iter()
            .map(|&i| {
                let address = endpoints[i].address.as_bytes();
                Walker {
                    endpoint: i as u32,
                    weight: weight(i),
                    next: xxh3_64_with_seed(address, 1) % m,
                    skip: xxh3_64_with_seed(address, 2) % (m - 1) + 1,
                    target: 0,
                }
            })
            .collect();
        let mut entries = vec![u32::MAX; m as usize];
        let mut filled = 0u64;
        let mut round = 1u64;
        while filled < m {
            for w in walkers.iter_mut() {
                if filled == m {
                    break;
                }
                // An endpoint of weight w claims on w of every `max` rounds.
                if round * w.weight < w.target {
                    continue;
                }
                w.target += max;
                while entries[w.next as usize] != u32::MAX {
                    w.next += w.skip;
                    if w.next >= m {
                        w.next -= m;
                    }
                }
                entries[w.next as usize] = w.endpoint;
                filled += 1;
            }
            round += 1;
        }
        Self { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry a key maps to.
    #[inline]
    fn slot(&self, key: u64) -> usize {
        ((u128::from(key) * self.entries.len() as u128) >> 64) as usize
    }

    /// The endpoint of `key`'s entry, or of the first entry after it that
    /// `accept`s its endpoint.
    #[inline]
    pub fn lookup_with(&self, key: u64, mut accept: impl FnMut(usize) -> bool) -> Option<usize> {
        let n = self.entries.len();
        if n == 0 {
            return None;
        }
        let start = self.slot(key);
        let first = self.entries[start] as usize;
        if accept(first) {
            return Some(first);
        }
        let mut refused = first;
        for k in 1..n {
            let e = self.entries[(start + k) % n] as usize;
            if e != refused {
                if accept(e) {
                    return Some(e);
                }
                refused = e;
            }
        }
        None
    }

    /// Entries per endpoint index.
    pub fn counts(&self, endpoints: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints];
        for &e in &self.entries {
            counts[e as usize] += 1;
        }
        counts
    }
}

fn next_prime(n: u64) -> u64 {
    let is_prime = |x: u64| {
        x >= 2
            && (2..)
                .take_while(|d| d * d <= x)
                .all(|d| !x.is_multiple_of(d))
    };
    (n.max(2)..).find(|&x| is_prime(x)).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{endpoints, endpoints_at, keys};

    #[test]
    fn primes() {
        assert_eq!(next_prime(65537), 65537);
        assert_eq!(next_prime(65538), 65539);
        assert_eq!(next_prime(100_000), 100_003);
    }

    #[test]
    fn entries_are_spread_evenly() {
        for n in [3, 10, 100] {
            let eps = endpoints(&vec![1; n]);
            let table = MaglevTable::build(&eps, |_| true);
            let m = table.len() as f64;
            let mean = m / n as f64;
            let counts = table.counts(n);
            let max = *counts.iter().max().unwrap() as f64;
            let min = *counts.iter().min().unwrap() as f64;
            assert!(
                max - mean <= 1.0 && mean - min <= 1.0,
                "n={n}: {min}..{max} around {mean}"
            );
            assert!(max / mean <= 1.0 + n as f64 / m);
        }
    }

    #[test]
    fn weights_are_honoured() {
        let eps = endpoints(&[1, 2, 5]);
        let table = MaglevTable::build(&eps, |_| true);
        let counts = table.counts(3);
        let m = table.len() as f64;
        for (count, w) in counts.iter().zip([1.0, 2.0, 5.0]) {
            let share = *count as f64 / m;
            assert!((share - w / 8.0).abs() < 0.001, "{counts:?}");
        }
    }

    #[test]
    fn removing_one_of_a_hundred_moves_few_keys() {
        let list: Vec<(String, u32)> = (0..100)
            .map(|i| (format!("10.3.{}.{}:80", i / 200, i % 200 + 1), 1))
            .collect();
        let full = endpoints_at(&list);
        let before = MaglevTable::build(&full, |_| true);
        let keys = keys(100_000);
        // The mean over ten different removals: which endpoint goes shifts a
        // single measurement by a few percent either way.
        let removals: Vec<usize> = (0..10).map(|k| k * 10 + 3).collect();
        let mut total = 0.0;
        for &gone in &removals {
            let after = MaglevTable::build(&full, |i| i != gone);
            let moved = keys
                .iter()
                .filter(|&&k| before.lookup_with(k, |_| true) != after.lookup_with(k, |_| true))
                .count() as f64
                / keys.len() as f64;
            // Every key of the removed endpoint moves; that alone is ideal.
            assert!(moved >= 0.009, "moved {moved}");
            total += moved;
        }
        let mean = total / removals.len() as f64;
        let ideal = 1.0 / 100.0;
        assert!(
            mean <= 1.6 * ideal,
            "moved {mean:.4} on average (ideal {ideal})"
        );
    }

    #[test]
    fn table_grows_for_skewed_weights() {
        let eps = endpoints(&[1, 256, 256, 256]);
        let table = MaglevTable::build(&eps, |_| true);
        assert!(table.len() as u64 >= 100 * 769);
        assert_eq!(table.len() as u64, next_prime(76_900));
    }

    #[test]
    fn unusable_entries_give_way_until_the_rebuild() {
        let eps = endpoints(&[1, 1, 1]);
        let maglev = Maglev::new(&eps, None);
        eps[1].state.set_healthy(false);
        for k in keys(1000) {
            assert_ne!(maglev.pick(&eps, Some(k), &[]), Some(1));
        }
        maglev.rebuild(&eps);
        assert_eq!(maglev.table().counts(3)[1], 0);
    }
}
