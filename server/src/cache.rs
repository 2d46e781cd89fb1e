//! Prepared profiles kept in memory, least recently used evicted first.
//!
//! Concurrent requests for a profile that is not prepared yet wait for one preparation.
//! Uploading symbols for a build id bumps a generation counter; a prepared profile that
//! uses that build id and was prepared before the upload is stale and is prepared again
//! on its next use (so new names appear without a restart).

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
    gen: AtomicU64,
    /// Build id -> generation of its latest symbol upload (this run).
    symbol_gen: Mutex<HashMap<String, u64>>,
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
            gen: AtomicU64::new(0),
            symbol_gen: Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The current symbol generation (read before looking symbols up).
    pub fn generation(&self) -> u64 {
        self.gen.load(Ordering::SeqCst)
    }

    /// Records that symbols for `build_id` were uploaded (after they are stored).
    pub fn symbols_uploaded(&self, build_id: &str) {
        let g = self.gen.fetch_add(1, Ordering::SeqCst) + 1;
        lock(&self.symbol_gen).insert(build_id.to_string(), g);
    }

    fn stale(&self, p: &Prepared) -> bool {
        let m = lock(&self.symbol_gen);
        p.build_ids
            .iter()
            .any(|b| m.get(b).is_some_and(|&g| g > p.gen))
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

    /// The prepared profile `id`, prepared by `load(generation)` if needed.
    pub async fn get<F, Fut>(&self, id: &str, load: F) -> Result<Arc<Prepared>, ApiError>
    where
        F: Fn(u64) -> Fut,
        Fut: Future<Output = Result<Prepared, ApiError>>,
    {
        for _ in 0..3 {
            let cell = self.cell(id);
            let mut loaded = false;
            let p = cell
                .get_or_try_init(|| {
                    loaded = true;
                    let fut = load(self.generation());
                    async move { fut.await.map(Arc::new) }
                })
                .await?
                .clone();
            if loaded {
                self.misses.fetch_add(1, Ordering::Relaxed);
            } else {
                self.hits.fetch_add(1, Ordering::Relaxed);
            }
            if !self.stale(&p) {
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
