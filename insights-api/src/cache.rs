//! What `/insights` fetched and what its narrator wrote, kept while the bins
//! are unchanged.
//!
//! Bins change only when a statement writes them, and every such statement
//! bumps `metricagg.bins_version` (a statement trigger; retention bumps it
//! too). A request reads that version (one primary-key row) and reuses a
//! dataset fetched under the same version for the same range, width and
//! metric filter; the analysis still runs per request. Memory is bounded by
//! the number of bins held; the least recently used entries go first.
//!
//! Narratives are kept the same way per (range, filter, bins version)
//! ([`NarrativeCache`]): the facts are a function of those, so a repeated
//! request makes no new LLM call. Only narratives worth repeating are kept
//! (see [`crate::llm::LlmInfo::cacheable`]): a validated LLM answer, or one
//! rejected by the validation (the same facts would get the same answer at
//! temperature 0), never a timeout or an HTTP error, which the next request
//! may get past.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::analysis::Dataset;
use crate::llm::LlmInfo;
use crate::narrative::Narrative;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub width: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub metric: Option<String>,
}

/// What a narrative depends on besides the bins version (the width follows
/// from the range and the stored widths, which may change on their own).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NarrativeKey {
    pub width: i64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub server: Option<String>,
    pub metric: Option<String>,
}

struct Entry<V> {
    version: i64,
    value: Arc<V>,
    cost: usize,
    used: u64,
}

struct Slots<K, V> {
    entries: HashMap<K, Entry<V>>,
    cost: usize,
    clock: u64,
}

/// Values by key, valid for one bins version, within a bound on their total
/// cost; the least recently used go first. A bound of 0 disables it.
pub struct VersionedLru<K, V> {
    max_cost: usize,
    inner: Mutex<Slots<K, V>>,
}

impl<K: Clone + Eq + Hash, V> VersionedLru<K, V> {
    pub fn new(max_cost: usize) -> Self {
        VersionedLru {
            max_cost,
            inner: Mutex::new(Slots {
                entries: HashMap::new(),
                cost: 0,
                clock: 0,
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max_cost > 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<K, V>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every update is a single insert/remove): keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value stored for `key` under `version`, if any.
    pub fn get(&self, key: &K, version: i64) -> Option<Arc<V>> {
        let mut g = self.lock();
        g.clock += 1;
        let now = g.clock;
        let e = g.entries.get_mut(key)?;
        if e.version != version {
            return None;
        }
        e.used = now;
        Some(Arc::clone(&e.value))
    }

    /// Stores `value` (costing `cost`) for `key` under `version`, evicting
    /// least recently used entries, and every entry of another version, to
    /// stay within the bound. A value costing more than the bound is not
    /// stored.
    pub fn put(&self, key: K, version: i64, value: Arc<V>, cost: usize) {
        if !self.enabled() || cost > self.max_cost {
            return;
        }
        let mut g = self.lock();
        g.clock += 1;
        let used = g.clock;
        let stale: Vec<K> = g
            .entries
            .iter()
            .filter(|(k, e)| e.version != version || **k == key)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(e) = g.entries.remove(&k) {
                g.cost -= e.cost;
            }
        }
        while g.cost + cost > self.max_cost {
            let Some(oldest) = g
                .entries
                .iter()
                .min_by_key(|(_, e)| e.used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(e) = g.entries.remove(&oldest) {
                g.cost -= e.cost;
            }
        }
        g.cost += cost;
        g.entries.insert(
            key,
            Entry {
                version,
                value,
                cost,
                used,
            },
        );
    }

    /// (entries, total cost) held.
    pub fn size(&self) -> (usize, usize) {
        let g = self.lock();
        (g.entries.len(), g.cost)
    }
}

/// Datasets by range, width and metric filter; the cost is the bins held
/// (about 64 bytes each).
pub struct DatasetCache(VersionedLru<Key, Dataset>);

impl DatasetCache {
    pub fn new(max_bins: usize) -> DatasetCache {
        DatasetCache(VersionedLru::new(max_bins))
    }

    pub fn enabled(&self) -> bool {
        self.0.enabled()
    }

    pub fn get(&self, key: &Key, version: i64) -> Option<Arc<Dataset>> {
        self.0.get(key, version)
    }

    pub fn put(&self, key: Key, version: i64, data: Arc<Dataset>) {
        let bins = data.series.iter().map(|s| s.len()).sum();
        self.0.put(key, version, data, bins);
    }

    /// (entries, bins) held.
    pub fn size(&self) -> (usize, usize) {
        self.0.size()
    }
}

/// A narrative and how it was written.
pub type Narrated = (Narrative, LlmInfo);

/// Narratives by range and filter, at most `max_entries`.
pub struct NarrativeCache(VersionedLru<NarrativeKey, Narrated>);

impl NarrativeCache {
    pub fn new(max_entries: usize) -> NarrativeCache {
        NarrativeCache(VersionedLru::new(max_entries))
    }

    pub fn get(&self, key: &NarrativeKey, version: i64) -> Option<Arc<Narrated>> {
        self.0.get(key, version)
    }

    pub fn put(&self, key: NarrativeKey, version: i64, value: Narrated) {
        self.0.put(key, version, Arc::new(value), 1);
    }

    pub fn len(&self) -> usize {
        self.0.size().0
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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

    fn nkey(h: i64, server: Option<&str>) -> NarrativeKey {
        let k = key(h);
        NarrativeKey {
            width: 60,
            start: k.start,
            end: k.end,
            server: server.map(str::to_string),
            metric: None,
        }
    }

    fn narrative(tag: &str) -> (Narrative, LlmInfo) {
        (
            Narrative {
                summary: tag.into(),
                findings: Vec::new(),
            },
            LlmInfo {
                mode: "openai",
                model: "m".into(),
                validated: true,
                fallback_reason: None,
                latency_ms: 1,
                calls: 1,
                response_format: None,
                cached: false,
            },
        )
    }

    #[test]
    fn narratives_by_key_and_version_within_the_bound() {
        let c = NarrativeCache::new(2);
        c.put(nkey(1, None), 5, narrative("a"));
        assert_eq!(c.get(&nkey(1, None), 5).unwrap().0.summary, "a");
        assert!(c.get(&nkey(1, None), 6).is_none(), "another version");
        assert!(
            c.get(&nkey(1, Some("srv-1")), 5).is_none(),
            "another filter"
        );
        c.put(nkey(2, None), 5, narrative("b"));
        assert!(c.get(&nkey(1, None), 5).is_some()); // 2 is now the oldest
        c.put(nkey(3, None), 5, narrative("c"));
        assert_eq!(c.len(), 2);
        assert!(c.get(&nkey(2, None), 5).is_none(), "evicted");
        // a new version drops the old ones
        c.put(nkey(4, None), 6, narrative("d"));
        assert_eq!(c.len(), 1);
        let off = NarrativeCache::new(0);
        off.put(nkey(1, None), 1, narrative("x"));
        assert!(off.is_empty());
    }

    #[test]
    fn disabled_stores_nothing() {
        let c = DatasetCache::new(0);
        c.put(key(1), 1, dataset(1));
        assert!(c.get(&key(1), 1).is_none());
        assert_eq!(c.size(), (0, 0));
    }
}
