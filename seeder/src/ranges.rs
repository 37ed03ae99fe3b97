//! A set of half-open index ranges `[a, b)`, kept merged: which timestamps
//! have been committed.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeSet {
    /// start → end, disjoint and non-adjacent.
    map: BTreeMap<u64, u64>,
}

impl RangeSet {
    pub fn insert(&mut self, mut a: u64, mut b: u64) {
        if a >= b {
            return;
        }
        // Merge with a range that starts at or before `a` and reaches it.
        if let Some((&s, &e)) = self.map.range(..=a).next_back() {
            if e >= a {
                a = s;
                b = b.max(e);
                self.map.remove(&s);
            }
        }
        // Swallow every range that starts inside [a, b].
        let inside: Vec<(u64, u64)> = self.map.range(a..=b).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in inside {
            b = b.max(e);
            self.map.remove(&s);
        }
        self.map.insert(a, b);
    }

    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.map.iter().map(|(&a, &b)| (a, b)).collect()
    }

    /// End of the contiguous run starting at 0 (0 if 0 is not covered).
    pub fn prefix_end(&self) -> u64 {
        match self.map.get(&0) {
            Some(&e) => e,
            None => 0,
        }
    }

    /// The parts of `[a, b)` covered by the set.
    pub fn intersect(&self, a: u64, b: u64) -> Vec<(u64, u64)> {
        self.map
            .iter()
            .filter(|(&s, &e)| s < b && e > a)
            .map(|(&s, &e)| (s.max(a), e.min(b)))
            .collect()
    }

    pub fn total(&self) -> u64 {
        self.map.iter().map(|(a, b)| b - a).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_out_of_order_inserts() {
        let mut r = RangeSet::default();
        r.insert(10, 20);
        r.insert(30, 40);
        assert_eq!(r.prefix_end(), 0);
        r.insert(0, 10);
        assert_eq!(r.ranges(), vec![(0, 20), (30, 40)]);
        assert_eq!(r.prefix_end(), 20);
        r.insert(20, 30);
        assert_eq!(r.ranges(), vec![(0, 40)]);
        r.insert(50, 60);
        r.insert(45, 55);
        r.insert(5, 6);
        assert_eq!(r.ranges(), vec![(0, 40), (45, 60)]);
        assert_eq!(r.total(), 55);
        assert_eq!(r.intersect(35, 50), vec![(35, 40), (45, 50)]);
        r.insert(41, 41);
        assert_eq!(r.ranges().len(), 2);
    }
}
