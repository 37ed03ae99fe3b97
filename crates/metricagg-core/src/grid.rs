//! A group's bins: which bin a row goes to, and how two groups' bins merge.
//!
//! The extension keeps each group's bins as an array sorted by start, every
//! bin with its values, in PostgreSQL memory. The decisions about that array
//! are made here, over plain slices: [`Grid::locate`] finds (or places) the
//! bin of a timestamp, trying the bin of the previous row first (rows arrive
//! in time order, so that is almost always the one), and [`merge`] walks two
//! sorted arrays in start order for the combine function.

use std::iter::FusedIterator;

use crate::bin::{bin, bin_end, is_valid, BinError, Interval, Width, NEG_INFINITY, POS_INFINITY};

/// One bin, `[start, end)`, in microseconds since the PostgreSQL epoch.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: i64,
    pub end: i64,
}

impl Span {
    #[inline(always)]
    pub fn contains(&self, ts: i64) -> bool {
        self.start <= ts && ts < self.end
    }
}

impl AsRef<Span> for Span {
    fn as_ref(&self) -> &Span {
        self
    }
}

/// A width and an origin that have been checked: everything needed to put a
/// timestamp into its bin. The interval is kept as given, because the
/// aggregates require every row of a group to pass the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Grid {
    interval: Interval,
    width: Width,
    origin: i64,
}

/// Where the bin of a timestamp is in a group's sorted bins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// The bin at this index.
    Found(usize),
    /// There is no such bin yet: inserting this span at this index keeps the
    /// bins sorted.
    Missing(usize, Span),
}

impl Grid {
    /// Checks the width (see [`Width::from_interval`]) and that the origin is
    /// a finite timestamp.
    pub fn new(interval: Interval, origin: i64) -> Result<Grid, BinError> {
        let width = interval.width()?;
        if origin == NEG_INFINITY || origin == POS_INFINITY {
            return Err(BinError::InfiniteOrigin);
        }
        if !is_valid(origin) {
            return Err(BinError::ResultOutOfRange);
        }
        Ok(Grid {
            interval,
            width,
            origin,
        })
    }

    pub fn interval(&self) -> Interval {
        self.interval
    }

    pub fn width(&self) -> Width {
        self.width
    }

    pub fn origin(&self) -> i64 {
        self.origin
    }

    /// The bin that contains `ts`.
    #[inline]
    pub fn span(&self, ts: i64) -> Result<Span, BinError> {
        let start = bin(ts, self.width, self.origin)?;
        Ok(Span {
            start,
            end: bin_end(start, self.width),
        })
    }

    /// Is `span` exactly one bin of this grid?
    pub fn is_bin(&self, span: Span) -> bool {
        is_valid(span.start) && self.span(span.start) == Ok(span)
    }

    /// The slot of the bin containing `ts` among `bins` (sorted by start,
    /// no two alike). `hint` is the bin the previous row went to: when it
    /// contains `ts`, nothing else is computed.
    #[inline(always)]
    pub fn locate<B: AsRef<Span>>(
        &self,
        bins: &[B],
        hint: usize,
        ts: i64,
    ) -> Result<Slot, BinError> {
        match bins.get(hint) {
            Some(b) if b.as_ref().contains(ts) => Ok(Slot::Found(hint)),
            _ => {
                let span = self.span(ts)?;
                Ok(match search(bins, span.start) {
                    Ok(i) => Slot::Found(i),
                    Err(i) => Slot::Missing(i, span),
                })
            }
        }
    }
}

/// Binary search of sorted bins by start: `Ok(index)` of the bin starting at
/// `start`, or `Err(index)` where one would be inserted.
#[inline]
pub fn search<B: AsRef<Span>>(bins: &[B], start: i64) -> Result<usize, usize> {
    bins.binary_search_by_key(&start, |b| b.as_ref().start)
}

/// One step of [`merge`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Only the left side has a bin with this start.
    Left(usize),
    /// Only the right side has a bin with this start.
    Right(usize),
    /// Both sides have it: the right one's values join the left one's.
    Both(usize, usize),
}

/// Walks two sorted bin arrays together in start order: every bin of either
/// side appears in exactly one step, and bins with the same start meet in a
/// [`Step::Both`]. O(left + right).
pub fn merge<'a, L: AsRef<Span>, R: AsRef<Span>>(left: &'a [L], right: &'a [R]) -> Merge<'a, L, R> {
    Merge {
        left,
        right,
        i: 0,
        j: 0,
    }
}

/// The iterator of [`merge`].
pub struct Merge<'a, L, R> {
    left: &'a [L],
    right: &'a [R],
    i: usize,
    j: usize,
}

impl<L: AsRef<Span>, R: AsRef<Span>> Iterator for Merge<'_, L, R> {
    type Item = Step;

    fn next(&mut self) -> Option<Step> {
        let step = match (self.left.get(self.i), self.right.get(self.j)) {
            (None, None) => return None,
            (Some(_), None) => Step::Left(self.i),
            (None, Some(_)) => Step::Right(self.j),
            (Some(l), Some(r)) => match l.as_ref().start.cmp(&r.as_ref().start) {
                std::cmp::Ordering::Less => Step::Left(self.i),
                std::cmp::Ordering::Greater => Step::Right(self.j),
                std::cmp::Ordering::Equal => Step::Both(self.i, self.j),
            },
        };
        match step {
            Step::Left(_) => self.i += 1,
            Step::Right(_) => self.j += 1,
            Step::Both(..) => {
                self.i += 1;
                self.j += 1;
            }
        }
        Some(step)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let (l, r) = (self.left.len() - self.i, self.right.len() - self.j);
        (l.max(r), Some(l + r))
    }
}

impl<L: AsRef<Span>, R: AsRef<Span>> FusedIterator for Merge<'_, L, R> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bin::USECS_PER_DAY;
    use crate::testing::{minute_grid, SplitMix64};

    const MINUTE: i64 = 60_000_000;

    #[test]
    fn grid_checks_width_and_origin() {
        let iv = |months, days, micros| Interval {
            months,
            days,
            micros,
        };
        assert_eq!(Grid::new(iv(0, 0, 0), 0), Err(BinError::NonPositiveWidth));
        assert_eq!(Grid::new(iv(1, 1, 0), 0), Err(BinError::MixedMonths));
        assert_eq!(
            Grid::new(iv(0, 0, 1), POS_INFINITY),
            Err(BinError::InfiniteOrigin)
        );
        assert_eq!(
            Grid::new(iv(0, 0, 1), i64::MIN + 1),
            Err(BinError::ResultOutOfRange)
        );
        let g = Grid::new(iv(0, 1, 0), 5).unwrap();
        assert_eq!(g.width(), Width::Micros(USECS_PER_DAY));
        assert_eq!((g.origin(), g.interval()), (5, iv(0, 1, 0)));
        assert!(g.is_bin(Span {
            start: 5,
            end: 5 + USECS_PER_DAY
        }));
        assert!(!g.is_bin(Span {
            start: 6,
            end: 6 + USECS_PER_DAY
        }));
        assert!(!g.is_bin(Span { start: 5, end: 6 }));
        assert!(!g.is_bin(Span {
            start: i64::MAX,
            end: i64::MAX
        }));
    }

    /// Property: locate agrees with a from-scratch answer (the bin of ts,
    /// found by linear scan), whatever the hint; inserting every Missing
    /// span keeps the bins sorted and unique.
    #[test]
    fn locate_matches_a_linear_scan_and_keeps_bins_sorted() {
        let grid = minute_grid();
        let mut rng = SplitMix64::new(0x5eed_0101);
        for _ in 0..300 {
            let mut bins: Vec<Span> = Vec::new();
            let mut hint = 0;
            let base = rng.range_i64(-1_000 * MINUTE, 1_000 * MINUTE);
            for _ in 0..200 {
                // Mostly time-ordered, sometimes late.
                let ts = if rng.next_u64().is_multiple_of(5) {
                    base + rng.range_i64(0, 300 * MINUTE)
                } else {
                    base + rng.range_i64(0, 10 * MINUTE) + bins.len() as i64 * MINUTE
                };
                let want = bins.iter().position(|b| b.contains(ts));
                let hint_in = if rng.next_u64().is_multiple_of(3) {
                    (rng.next_u64() % 400) as usize
                } else {
                    hint
                };
                match grid.locate(&bins, hint_in, ts).unwrap() {
                    Slot::Found(i) => {
                        assert_eq!(Some(i), want);
                        hint = i;
                    }
                    Slot::Missing(i, span) => {
                        assert_eq!(want, None);
                        assert!(span.contains(ts) && grid.is_bin(span));
                        bins.insert(i, span);
                        hint = i;
                    }
                }
                assert!(bins.windows(2).all(|w| w[0].end <= w[1].start));
            }
        }
    }

    #[test]
    fn locate_reports_bin_errors() {
        let grid = minute_grid();
        let bins: [Span; 0] = [];
        assert_eq!(
            grid.locate(&bins, 0, POS_INFINITY),
            Err(BinError::InfiniteTimestamp)
        );
    }

    /// Property: merge visits every bin of both sides once, in start order,
    /// pairing equal starts, as a sort of the union would.
    #[test]
    fn merge_visits_the_sorted_union() {
        let mut rng = SplitMix64::new(0x5eed_0102);
        let spans = |rng: &mut SplitMix64| {
            let mut starts: Vec<i64> = (0..rng.next_u64() % 40)
                .map(|_| rng.range_i64(0, 60) * MINUTE)
                .collect();
            starts.sort_unstable();
            starts.dedup();
            starts
                .into_iter()
                .map(|start| Span {
                    start,
                    end: start + MINUTE,
                })
                .collect::<Vec<_>>()
        };
        for _ in 0..2_000 {
            let (l, r) = (spans(&mut rng), spans(&mut rng));
            let steps: Vec<Step> = merge(&l, &r).collect();
            let starts: Vec<i64> = steps
                .iter()
                .map(|s| match *s {
                    Step::Left(i) => l[i].start,
                    Step::Right(j) => r[j].start,
                    Step::Both(i, j) => {
                        assert_eq!(l[i], r[j]);
                        l[i].start
                    }
                })
                .collect();
            let mut want: Vec<i64> = l.iter().chain(&r).map(|s| s.start).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(starts, want);
            let lefts = steps
                .iter()
                .filter(|s| matches!(s, Step::Left(_) | Step::Both(..)))
                .count();
            let rights = steps
                .iter()
                .filter(|s| matches!(s, Step::Right(_) | Step::Both(..)))
                .count();
            assert_eq!((lefts, rights), (l.len(), r.len()));
            let (lo, hi) = merge(&l, &r).size_hint();
            assert!(lo <= steps.len() && steps.len() <= hi.unwrap());
        }
    }
}
