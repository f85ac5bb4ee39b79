//! Walker/Vose alias tables: O(1) weighted draws from one random u64.

use crate::upstream::endpoint::Endpoint;

/// Draws an endpoint index in proportion to its weight; weight-0 endpoints
/// are never drawn.
#[derive(Debug, Clone)]
pub struct Alias {
    columns: Vec<Column>,
}

/// One column: the chance (scaled to 2^32) of keeping the column itself, and
/// the index drawn otherwise; side by side so a draw is one load.
#[derive(Debug, Clone, Copy)]
pub struct Column {
    keep: u64,
    alias: u32,
}

impl Alias {
    pub fn new(endpoints: &[Endpoint]) -> Self {
        Self::from_weights(&endpoints.iter().map(|e| e.weight).collect::<Vec<_>>())
    }

    pub fn from_weights(weights: &[u32]) -> Self {
        let n = weights.len();
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return Self {
                columns: Vec::new(),
            };
        }
        // Scaled so the mean column is exactly `total`: integer arithmetic,
        // no rounding drift.
        let mut scaled: Vec<u64> = weights.iter().map(|&w| u64::from(w) * n as u64).collect();
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < total);
        while let (Some(&s), Some(&l)) = (small.last(), large.last()) {
            small.pop();
            alias[s] = l as u32;
            scaled[l] -= total - scaled[s];
            if scaled[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left is full (exactly `total`, up to rounding).
        for i in large.into_iter().chain(small) {
            scaled[i] = total;
        }
        let columns = scaled
            .iter()
            .zip(alias)
            .map(|(&s, alias)| Column {
                keep: ((u128::from(s) << 32) / u128::from(total)) as u64,
                alias,
            })
            .collect();
        Self { columns }
    }

    pub fn is_empty(&self) -> bool {
        self.columns.is_empty()
    }

    /// The table's columns, for callers that keep several tables in one array.
    pub fn columns(&self) -> &[Column] {
        &self.columns
    }

    /// One draw from a uniformly random `r`.
    #[inline]
    pub fn draw(&self, r: u64) -> usize {
        draw(&self.columns, r)
    }
}

/// One draw from `columns` (a non-empty table) and a uniformly random `r`:
/// the high 32 bits choose the column, the low 32 bits the coin.
#[inline]
pub fn draw(columns: &[Column], r: u64) -> usize {
    let n = columns.len() as u64;
    let index = (((r >> 32) * n) >> 32) as usize;
    let column = columns[index];
    if (r & 0xffff_ffff) < column.keep {
        index
    } else {
        column.alias as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_weights_are_never_drawn_and_shares_follow_weights() {
        let alias = Alias::from_weights(&[1, 0, 3]);
        let mut counts = [0u32; 3];
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..400_000 {
            counts[alias.draw(rng.u64(..))] += 1;
        }
        assert_eq!(counts[1], 0);
        let share = f64::from(counts[2]) / 400_000.0;
        assert!((share - 0.75).abs() < 0.005, "{counts:?}");
    }

    #[test]
    fn all_zero_is_empty() {
        assert!(Alias::from_weights(&[0, 0]).is_empty());
    }
}
