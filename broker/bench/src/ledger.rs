//! Which (`producer_id`, `sequence`) pairs a reading run saw: the checks of the
//! `consume` and `receive` modes.
//!
//! The bench's producers stamp every message with both (each lane is its own
//! idempotent producer, its sequences counting up from the first), so one bit per
//! sequence and producer id holds a run of millions of messages in a few hundred KB.

use std::collections::HashMap;

/// Which sequences of which producers were read: duplicates and gaps.
#[derive(Default)]
pub(crate) struct SequenceLedger {
    /// producer_id → bit per sequence seen.
    seen: HashMap<String, Vec<u64>>,
    duplicates: u64,
}

impl SequenceLedger {
    /// Marks (`producer_id`, `sequence`) read; answers whether it had been read
    /// before (a duplicate, also counted in [`SequenceLedger::duplicates`]).
    pub(crate) fn record(&mut self, producer_id: &str, sequence: u64) -> bool {
        let Ok(index) = usize::try_from(sequence / 64) else {
            return false;
        };
        let bits = self.seen.entry(producer_id.to_string()).or_default();
        if bits.len() <= index {
            bits.resize(index + 1, 0);
        }
        let mask = 1u64 << (sequence % 64);
        let repeated = bits[index] & mask != 0;
        if repeated {
            self.duplicates += 1;
        }
        bits[index] |= mask;
        repeated
    }

    /// Whether (`producer_id`, `sequence`) was recorded.
    pub(crate) fn contains(&self, producer_id: &str, sequence: u64) -> bool {
        let Ok(index) = usize::try_from(sequence / 64) else {
            return false;
        };
        self.seen
            .get(producer_id)
            .and_then(|bits| bits.get(index))
            .is_some_and(|word| word & (1u64 << (sequence % 64)) != 0)
    }

    /// Records of a pair already recorded.
    pub(crate) fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Distinct producer ids recorded.
    pub(crate) fn producer_ids(&self) -> usize {
        self.seen.len()
    }

    /// Sequences missing between each producer's lowest and highest sequence read.
    pub(crate) fn gaps(&self) -> u64 {
        self.seen
            .values()
            .map(|bits| {
                let first = bits.iter().position(|w| *w != 0);
                let last = bits.iter().rposition(|w| *w != 0);
                let (Some(first), Some(last)) = (first, last) else {
                    return 0;
                };
                let low = first as u64 * 64 + u64::from(bits[first].trailing_zeros());
                let high = last as u64 * 64 + 63 - u64::from(bits[last].leading_zeros());
                let set: u64 = bits.iter().map(|w| u64::from(w.count_ones())).sum();
                high - low + 1 - set
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ledger_counts_duplicates_and_gaps() {
        let mut ledger = SequenceLedger::default();
        for seq in [5, 6, 8, 70] {
            assert!(!ledger.record("a", seq));
        }
        assert!(ledger.record("a", 6), "a second 6 is a duplicate");
        ledger.record("b", 0);
        assert_eq!(ledger.duplicates(), 1);
        assert_eq!(ledger.producer_ids(), 2);
        // a: 5..=70 is 66 sequences, 4 distinct seen → 62 missing; b: none.
        assert_eq!(ledger.gaps(), 62);
        assert!(ledger.contains("a", 70));
        assert!(!ledger.contains("a", 7));
        assert!(!ledger.contains("a", 1_000));
        assert!(!ledger.contains("c", 0));
    }
}
