//! Maglev: a lookup table with O(1) picks and minimal disruption.
//!
//! The table has M entries, M = 65537, or the next prime at or above
//! 100 x sum(weights) / min(weight) over the endpoints of weight > 0 when
//! that is larger. M is fixed for the snapshot: an endpoint that becomes
//! unusable changes which entries it owns, never M (a new M would remap
//! nearly every key). Each usable endpoint (ordered by address) walks its
//! own permutation of the table, `offset = XXH3-64(address, seed 1) mod M`,
//! `skip = XXH3-64(address, seed 2) mod (M - 1) + 1`, claiming free entries;
//! an endpoint of weight w claims on w of every max-weight rounds (Envoy's
//! weighted Maglev). A key picks entry `key x M >> 64`.
//!
//! The table covers the usable endpoints, as the upstream's membership
//! step built it (reload, discovery or a change of usability: one path,
//! off the request path); until the next build, an entry whose endpoint
//! became unusable (or was tried) gives way to the next entries of the table.
//!
//! Slow start: while endpoints ramp, a second table is built without them.
//! A key whose entry in the full table is a ramping endpoint goes there
//! when the key's fraction is below the ramp's progress; every other key
//! takes its entry in the table without the ramping endpoints, where it
//! was before they came (SPEC §Slow start).

use xxhash_rust::xxh3::xxh3_64_with_seed;

use super::{RoundRobin, eligible};
use crate::config::HashKey;
use crate::upstream::endpoint::Endpoint;

/// The smallest table size.
pub const MIN_TABLE_SIZE: u64 = 65537;

/// An entry no endpoint owns (no endpoint was usable).
const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Maglev {
    pub key: Option<HashKey>,
    /// Over the usable endpoints when built.
    table: Box<[u32]>,
    /// While endpoints ramp: the table without them, and which they are.
    without_ramping: Option<(Box<[u32]>, Vec<u32>)>,
    /// Requests without a key.
    fallback: RoundRobin,
}

/// A Maglev lookup table: endpoint indices, `u32::MAX` where none.
#[derive(Debug, Clone)]
pub struct MaglevTable {
    entries: Vec<u32>,
}

impl Maglev {
    /// Builds the table over the endpoints usable now, and, when some of
    /// them ramp (slow start), the table without those.
    pub fn new(endpoints: &[Endpoint], key: Option<HashKey>, ramping: bool) -> Self {
        let usable = |i: usize| endpoints[i].state.is_usable();
        let table = MaglevTable::build(endpoints, usable).entries.into();
        let without_ramping = ramping.then(|| {
            let ramps = |i: usize| endpoints[i].state.ramp_progress().is_some();
            let settled = MaglevTable::build(endpoints, |i| usable(i) && !ramps(i));
            let ramping = (0..endpoints.len() as u32)
                .filter(|&i| ramps(i as usize))
                .collect();
            (settled.entries.into(), ramping)
        });
        Self {
            key,
            table,
            without_ramping,
            fallback: RoundRobin::new(endpoints),
        }
    }

    /// The entry for `key` that is eligible; round robin without a key.
    #[inline]
    pub fn pick(&self, endpoints: &[Endpoint], key: Option<u64>, tried: &[usize]) -> Option<usize> {
        let Some(key) = key else {
            return self.fallback.pick(endpoints, tried);
        };
        let found = lookup(
            self.table.len(),
            key,
            |k| self.table[k],
            |i| eligible(endpoints, i, tried),
        );
        found.or_else(|| self.fallback.pick(endpoints, tried))
    }

    /// A pick while endpoints ramp, at `now` (ms since the process epoch).
    pub fn pick_ramping(
        &self,
        endpoints: &[Endpoint],
        key: u64,
        tried: &[usize],
        now: u64,
    ) -> Option<usize> {
        let full = self.pick(endpoints, Some(key), tried)?;
        let Some((settled, ramping)) = &self.without_ramping else {
            return Some(full);
        };
        // A ramping endpoint takes the keys under its progress (all of
        // them once its ramp is over, until the next build).
        if ramping.contains(&(full as u32))
            && endpoints[full]
                .state
                .ramp_progress_at(now)
                .is_none_or(|progress| super::key_fraction(key) < progress)
        {
            return Some(full);
        }
        lookup(
            settled.len(),
            key,
            |k| settled[k],
            |i| eligible(endpoints, i, tried),
        )
        .or(Some(full))
    }

    /// The table as built (tests, `check --diff`, keys moved).
    pub fn table(&self) -> MaglevTable {
        MaglevTable {
            entries: self.table.to_vec(),
        }
    }
}

impl MaglevTable {
    /// Builds the table over the endpoints `include`d with weight > 0.
    pub fn build(endpoints: &[Endpoint], include: impl Fn(usize) -> bool) -> Self {
        let weight = |i: usize| u64::from(endpoints[i].weight);
        let weighted = || (0..endpoints.len()).filter(|&i| endpoints[i].weight > 0);
        let sum: u64 = weighted().map(weight).sum();
        let min = weighted().map(weight).min().unwrap_or(1);
        let m = MIN_TABLE_SIZE.max(next_prime((100 * sum).div_ceil(min)));
        let mut members: Vec<usize> = weighted().filter(|&i| include(i)).collect();
        if members.is_empty() {
            return Self {
                entries: vec![EMPTY; m as usize],
            };
        }
        members.sort_by(|&a, &b| endpoints[a].address.cmp(&endpoints[b].address));
        let max = members.iter().map(|&i| weight(i)).max().unwrap_or(1);

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
        let mut entries = vec![EMPTY; m as usize];
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
                while entries[w.next as usize] != EMPTY {
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

    /// The endpoint of `key`'s entry, or of the first entry after it that
    /// `accept`s its endpoint.
    pub fn lookup_with(&self, key: u64, accept: impl FnMut(usize) -> bool) -> Option<usize> {
        lookup(self.entries.len(), key, |k| self.entries[k], accept)
    }

    /// Entries per endpoint index.
    /// Who owns which part of the hash space: `(start, endpoint)` pieces,
    /// entry `j` from `ceil(j x 2^64 / M)` (a key picks entry `key x M >> 64`).
    pub fn pieces(&self) -> Vec<(u64, u32)> {
        let m = self.entries.len() as u128;
        self.entries
            .iter()
            .enumerate()
            .map(|(j, &e)| (((j as u128) << 64).div_ceil(m) as u64, e))
            .collect()
    }

    pub fn counts(&self, endpoints: usize) -> Vec<usize> {
        let mut counts = vec![0; endpoints];
        for &e in self.entries.iter().filter(|&&e| e != EMPTY) {
            counts[e as usize] += 1;
        }
        counts
    }
}

/// The endpoint of `key`'s entry in a table of `n` entries read through
/// `entry`, or of the first entry after it that `accept`s its endpoint.
#[inline]
fn lookup(
    n: usize,
    key: u64,
    entry: impl Fn(usize) -> u32,
    mut accept: impl FnMut(usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = ((u128::from(key) * n as u128) >> 64) as usize;
    let first = entry(start);
    // A built table is either full or wholly empty (no usable endpoint).
    if first == EMPTY {
        return None;
    }
    if accept(first as usize) {
        return Some(first as usize);
    }
    let mut refused = first;
    for k in 1..n {
        let e = entry(if start + k < n {
            start + k
        } else {
            start + k - n
        });
        if e == EMPTY {
            return None;
        }
        if e != refused {
            if accept(e as usize) {
                return Some(e as usize);
            }
            refused = e;
        }
    }
    None
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
        let maglev = Maglev::new(&eps, None, false);
        eps[1].state.set_healthy(false);
        for k in keys(1000) {
            assert_ne!(maglev.pick(&eps, Some(k), &[]), Some(1));
        }
        let maglev = Maglev::new(&eps, None, false);
        assert_eq!(maglev.table().counts(3)[1], 0);
        // Back again: the next build restores it.
        eps[1].state.set_healthy(true);
        let maglev = Maglev::new(&eps, None, false);
        assert_eq!(
            maglev.table().counts(3),
            MaglevTable::build(&eps, |_| true).counts(3)
        );
    }

    #[test]
    fn an_unusable_endpoint_keeps_the_table_size_and_moves_only_its_keys() {
        // 1,000 endpoints: M = 100,003. Sized over the usable ones, losing one
        // would give M = next_prime(99,900) and remap nearly every key.
        let eps = endpoints(&vec![1; 1000]);
        let before = Maglev::new(&eps, None, false).table();
        eps[7].state.set_healthy(false);
        let after = Maglev::new(&eps, None, false).table();
        assert_eq!(before.len(), 100_003);
        assert_eq!(after.len(), before.len());
        let keys = keys(20_000);
        let moved = keys
            .iter()
            .filter(|&&k| before.lookup_with(k, |_| true) != after.lookup_with(k, |_| true))
            .count() as f64
            / keys.len() as f64;
        // Maglev's own disruption at M = 100 x N is several times the ideal
        // 0.1% (0.72% measured); a resized table would move almost all.
        assert!(moved < 0.02, "moved {moved}");
        let resized = MaglevTable::build(&eps[..999], |_| true);
        assert_ne!(resized.len(), before.len());
        let moved_if_resized = keys
            .iter()
            .filter(|&&k| before.lookup_with(k, |_| true) != resized.lookup_with(k, |_| true))
            .count() as f64
            / keys.len() as f64;
        assert!(moved_if_resized > 0.5, "moved {moved_if_resized}");
    }

    #[test]
    fn no_usable_endpoint_answers_at_once() {
        let eps = endpoints(&[1, 1]);
        for e in &eps {
            e.state.set_healthy(false);
        }
        let table = MaglevTable::build(&eps, |i| eps[i].state.is_usable());
        assert_eq!(table.len(), MIN_TABLE_SIZE as usize);
        assert_eq!(table.counts(2), [0, 0]);
        assert_eq!(table.lookup_with(42, |_| true), None);
        let maglev = Maglev::new(&eps, None, false);
        assert_eq!(maglev.pick(&eps, Some(42), &[]), None);
    }
}
