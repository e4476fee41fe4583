//! A bounded, thread-safe cache of decoded tiles.
//!
//! Sharded (16 mutex-protected maps) so parallel readers rarely contend; each shard evicts its
//! oldest entries first (FIFO) once it holds more than its share of the byte budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

const SHARDS: usize = 16;

#[derive(Default)]
struct Shard {
    map: HashMap<u64, Arc<Vec<u8>>>,
    order: VecDeque<u64>,
    bytes: usize,
}

/// Decoded tiles keyed by `(level, tile index)`, bounded by a byte budget.
pub struct TileCache {
    shards: Vec<Mutex<Shard>>,
    shard_budget: usize,
}

impl std::fmt::Debug for TileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TileCache({} bytes)", self.shard_budget * SHARDS)
    }
}

/// The cache key of a tile.
pub fn key(level: usize, tile: u64) -> u64 {
    ((level as u64) << 48) ^ tile
}

impl TileCache {
    /// A cache holding at most about `budget_bytes` of decoded tiles (0 disables caching).
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            shard_budget: budget_bytes / SHARDS,
        }
    }

    /// The total byte budget.
    pub fn budget(&self) -> usize {
        self.shard_budget * SHARDS
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60;
        &self.shards[h as usize % SHARDS]
    }

    /// The cached tile, if present.
    pub fn get(&self, key: u64) -> Option<Arc<Vec<u8>>> {
        if self.shard_budget == 0 {
            return None;
        }
        let shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        shard.map.get(&key).cloned()
    }

    /// Stores a tile, evicting the oldest ones of its shard when over budget.
    pub fn insert(&self, key: u64, tile: Arc<Vec<u8>>) {
        if self.shard_budget == 0 || tile.len() > self.shard_budget {
            return;
        }
        let mut shard = self
            .shard(key)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let len = tile.len();
        if let Some(old) = shard.map.insert(key, tile) {
            shard.bytes -= old.len();
        } else {
            shard.order.push_back(key);
        }
        shard.bytes += len;
        while shard.bytes > self.shard_budget {
            let Some(k) = shard.order.pop_front() else {
                break;
            };
            if let Some(old) = shard.map.remove(&k) {
                shard.bytes -= old.len();
            }
        }
    }

    /// Bytes currently held.
    pub fn used(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).bytes)
            .sum()
    }

    /// Drops every cached tile.
    pub fn clear(&self) {
        for s in &self.shards {
            *s.lock().unwrap_or_else(PoisonError::into_inner) = Shard::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_budget_and_returns_what_was_stored() {
        let cache = TileCache::new(16 * 1000);
        for i in 0..500u64 {
            cache.insert(key(0, i), Arc::new(vec![i as u8; 100]));
            assert!(cache.used() <= cache.budget());
        }
        let last = cache.get(key(0, 499));
        assert_eq!(last.as_deref().map(|t| t[0]), Some((499 % 256) as u8));
        assert!(cache.get(key(0, 0)).is_none());
        let off = TileCache::new(0);
        off.insert(1, Arc::new(vec![0u8; 10]));
        assert!(off.get(1).is_none());
    }
}
