//! Keys moved by a change: the share of the hash space whose endpoint
//! differs between two builds of an upstream's tables, computed exactly
//! from their pieces (Maglev: its entries; consistent hash: the ring's arcs
//! between the midpoints of the usable points), not sampled.

use crate::upstream::endpoint::Endpoint;

/// No endpoint owns the piece.
pub const NONE: u32 = u32::MAX;

/// The share of [0, 2^64) whose owner's address differs between `before`
/// and `after`: pieces `(start, endpoint index)` sorted by start, each
/// beginning at 0, indices into the endpoints given with them.
pub fn moved_share(
    before: (&[(u64, u32)], &[Endpoint]),
    after: (&[(u64, u32)], &[Endpoint]),
) -> f64 {
    fn address<'a>(
        (pieces, endpoints): (&[(u64, u32)], &'a [Endpoint]),
        k: usize,
    ) -> Option<&'a str> {
        let e = pieces[k].1;
        (e != NONE).then(|| &*endpoints[e as usize].address)
    }
    let end = |pieces: &[(u64, u32)], k: usize| {
        pieces.get(k + 1).map_or(1u128 << 64, |p| u128::from(p.0))
    };
    let (mut i, mut j, mut at, mut moved) = (0usize, 0usize, 0u128, 0u128);
    while i < before.0.len() && j < after.0.len() {
        let (a_end, b_end) = (end(before.0, i), end(after.0, j));
        let to = a_end.min(b_end);
        if address(before, i) != address(after, j) {
            moved += to - at;
        }
        at = to;
        i += usize::from(a_end == to);
        j += usize::from(b_end == to);
    }
    moved as f64 / 2f64.powi(64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::{endpoints, endpoints_at, keys};
    use crate::balance::{MaglevTable, Ring};

    /// The exact share agrees with the share of 200,000 sampled keys.
    #[test]
    fn exact_share_matches_sampled_keys() {
        let list: Vec<(String, u32)> = (1..=20).map(|i| (format!("10.3.0.{i}:80"), 1)).collect();
        let all = endpoints_at(&list);
        let fewer = endpoints_at(&list[..19]);
        let sample = keys(200_000);
        let sampled = |moved: usize| moved as f64 / sample.len() as f64;

        let (a, b) = (Ring::build(&all), Ring::build(&fewer));
        let exact = moved_share((&a.pieces(|_| true), &all), (&b.pieces(|_| true), &fewer));
        let moved = sample
            .iter()
            .filter(|&&k| all[a.owner(k).unwrap()].address != fewer[b.owner(k).unwrap()].address)
            .count();
        assert!(
            (exact - sampled(moved)).abs() < 0.003,
            "{exact} vs {}",
            sampled(moved)
        );
        assert!(
            (exact - 0.05).abs() < 0.02,
            "ring: one of 20 gone moves ~5%: {exact}"
        );

        let (a, b) = (
            MaglevTable::build(&all, |_| true),
            MaglevTable::build(&fewer, |_| true),
        );
        let exact = moved_share((&a.pieces(), &all), (&b.pieces(), &fewer));
        let moved = sample
            .iter()
            .filter(|&&k| {
                all[a.lookup_with(k, |_| true).unwrap()].address
                    != fewer[b.lookup_with(k, |_| true).unwrap()].address
            })
            .count();
        assert!(
            (exact - sampled(moved)).abs() < 0.003,
            "{exact} vs {}",
            sampled(moved)
        );
    }

    #[test]
    fn nothing_moves_between_equal_builds_and_everything_to_none() {
        let eps = endpoints(&[1, 2, 3]);
        let ring = Ring::build(&eps);
        let pieces = ring.pieces(|_| true);
        assert_eq!(moved_share((&pieces, &eps), (&pieces, &eps)), 0.0);
        let none = ring.pieces(|_| false);
        assert_eq!(moved_share((&pieces, &eps), (&none, &eps)), 1.0);
        // Skipping one endpoint moves exactly its share, nothing else.
        let without = ring.pieces(|i| i != 1);
        let share = ring.shares(3)[1];
        let moved = moved_share((&pieces, &eps), (&without, &eps));
        assert!((moved - share).abs() < 1e-9, "{moved} vs {share}");
    }
}
