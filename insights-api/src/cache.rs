//! The datasets `/insights` fetched, kept while the bins are unchanged.
//!
//! Bins change only when a statement writes them, and every such statement
//! bumps `metricagg.bins_version` (a statement trigger; retention bumps it
//! too). A request reads that version (one primary-key row) and reuses a
//! dataset fetched under the same version for the same range, width and
//! metric filter; the analysis and the narrative still run per request. Memory
//! is bounded by the number of bins held; the least recently used entries go
//! first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::analysis::Dataset;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub width: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub metric: Option<String>,
}

struct Entry {
    version: i64,
    data: Arc<Dataset>,
    bins: usize,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    bins: usize,
    clock: u64,
}

/// A bounded cache of datasets by key and bins version. `max_bins == 0`
/// disables it.
pub struct DatasetCache {
    max_bins: usize,
    inner: Mutex<Inner>,
}

fn bins_of(d: &Dataset) -> usize {
    d.series.iter().map(|s| s.len()).sum()
}

impl DatasetCache {
    pub fn new(max_bins: usize) -> DatasetCache {
        DatasetCache {
            max_bins,
            inner: Mutex::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_bins > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single insert/remove): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The dataset stored for `key` under `version`, if any.
    pub fn get(&self, key: &Key, version: i64) -> Option<Arc<Dataset>> {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        let e = g.entries.get_mut(key)?;
        if e.version != version {
            return None;
        }
        e.used = now;
        Some(Arc::clone(&e.data))
    }

    /// Stores `data` for `key` under `version`, evicting least recently used
    /// entries (and any entry of an older version) to stay within the bound.
    /// A dataset larger than the whole bound is not stored.
    pub fn put(&self, key: Key, version: i64, data: Arc<Dataset>) {
        let bins = bins_of(&data);
        if !self.enabled() || bins > self.max_bins {
            return;
        }
        let mut g = self.lock();
        g.clock += 1;
        let used = g.clock;
        let stale: Vec<Key> = g
            .entries
            .iter()
            .filter(|(k, e)| e.version != version || **k == key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(e) = g.entries.remove(&k) {
                g.bins -= e.bins;
            }
        }
        while g.bins + bins > self.max_bins {
            let Some(oldest) = g
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = g.entries.remove(&oldest) {
                g.bins -= e.bins;
            }
        }
        g.bins += bins;
        g.entries.insert(
            key,
            Entry {
                version,
                data,
                bins,
                used,
            },
        );
    }

    /// (entries, bins) held.
    pub fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.bins)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::Series;

    fn dataset(bins: usize) -> Arc<Dataset> {
        let mut s = Series::new("srv-1", "cpu", 60);
        for i in 0..bins {
            s.ts.push(i as i64 * 60);
            s.count.push(1);
            s.avg.push(1.0);
            s.min.push(1.0);
            s.max.push(1.0);
        }
        Arc::new(Dataset {
            width: 60,
            series: vec![s],
        })
    }

    fn key(h: i64) -> Key {
        Key {
            width: 60,
            start: DateTime::from_timestamp(h * 3600, 0).unwrap(),
            end: DateTime::from_timestamp(h * 3600 + 3600, 0).unwrap(),
            metric: None,
        }
    }

    #[test]
    fn hits_only_under_the_same_version_and_key() {
        let c = DatasetCache::new(1000);
        c.put(key(1), 7, dataset(10));
        assert!(c.get(&key(1), 7).is_some());
        assert!(c.get(&key(1), 8).is_none(), "another version is a miss");
        assert!(c.get(&key(2), 7).is_none(), "another range is a miss");
        let mut k = key(1);
        k.metric = Some("cpu".into());
        assert!(c.get(&k, 7).is_none(), "another filter is a miss");
        // A newer version drops what older versions stored.
        c.put(key(2), 8, dataset(5));
        assert_eq!(c.size(), (1, 5));
    }

    #[test]
    fn evicts_least_recently_used_within_the_bound() {
        let c = DatasetCache::new(100);
        c.put(key(1), 1, dataset(40));
        c.put(key(2), 1, dataset(40));
        assert!(c.get(&key(1), 1).is_some()); // key 2 is now the oldest
        c.put(key(3), 1, dataset(40));
        assert!(c.get(&key(1), 1).is_some());
        assert!(c.get(&key(2), 1).is_none(), "evicted");
        assert!(c.get(&key(3), 1).is_some());
        assert_eq!(c.size(), (2, 80));
        // Replacing a key does not count it twice; too big is not stored.
        c.put(key(3), 1, dataset(50));
        assert_eq!(c.size(), (2, 90));
        c.put(key(4), 1, dataset(101));
        assert!(c.get(&key(4), 1).is_none());
        assert_eq!(c.size(), (2, 90));
    }

    #[test]
    fn disabled_stores_nothing() {
        let c = DatasetCache::new(0);
        c.put(key(1), 1, dataset(1));
        assert!(c.get(&key(1), 1).is_none());
        assert_eq!(c.size(), (0, 0));
    }
}
