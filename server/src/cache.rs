//! Prepared profiles kept in memory, least recently used evicted first.
//!
//! Concurrent requests for a profile that is not prepared yet wait for one preparation.
//! Each preparation remembers the symbol sequence number of its build ids (see
//! [`crate::store::MetaStore::symbol_seq`]); a caller that reads a larger number from the
//! database (symbols were uploaded since, through this replica or another) gets the
//! profile prepared again, so new names appear without a restart. Deleted profiles need
//! no notice: every lookup reads the record from the database first.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::OnceCell;

use crate::error::ApiError;
use crate::prepare::Prepared;

struct Slot {
    cell: Arc<OnceCell<Arc<Prepared>>>,
    used: u64,
}

pub struct Cache {
    slots: Mutex<HashMap<String, Slot>>,
    capacity: usize,
    tick: AtomicU64,
    pub hits: AtomicU64,
    pub misses: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Only plain maps are guarded; none is left half-updated by a panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            slots: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            tick: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// Number of profiles held (prepared or being prepared).
    pub fn len(&self) -> usize {
        lock(&self.slots).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn remove(&self, id: &str) {
        lock(&self.slots).remove(id);
    }

    fn cell(&self, id: &str) -> Arc<OnceCell<Arc<Prepared>>> {
        let used = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut slots = lock(&self.slots);
        if let Some(s) = slots.get_mut(id) {
            s.used = used;
            return s.cell.clone();
        }
        let cell = Arc::new(OnceCell::new());
        slots.insert(
            id.to_string(),
            Slot {
                cell: cell.clone(),
                used,
            },
        );
        while slots.len() > self.capacity {
            let oldest = slots
                .iter()
                .filter(|(k, _)| k.as_str() != id)
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => slots.remove(&k),
                None => break,
            };
        }
        cell
    }

    /// The prepared profile `id` with symbols at least as new as `symbol_seq`, prepared
    /// by `load` if needed.
    pub async fn get<F, Fut>(
        &self,
        id: &str,
        symbol_seq: i64,
        load: F,
    ) -> Result<Arc<Prepared>, ApiError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Prepared, ApiError>>,
    {
        for _ in 0..3 {
            let cell = self.cell(id);
            let mut loaded = false;
            let p = cell
                .get_or_try_init(|| {
                    loaded = true;
                    let fut = load();
                    async move { fut.await.map(Arc::new) }
                })
                .await?
                .clone();
            if loaded {
                self.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            if p.symbol_seq >= symbol_seq {
                return Ok(p);
            }
            // Symbols arrived since: drop this preparation (unless someone already did).
            let mut slots = lock(&self.slots);
            if slots.get(id).is_some_and(|s| Arc::ptr_eq(&s.cell, &cell)) {
                slots.remove(id);
            }
        }
        Err(ApiError::Unavailable(
            "symbols for this profile keep changing; try again".into(),
        ))
    }
}
