//! Storage: metadata ([`MetaStore`]) and content-addressed blobs ([`BlobStore`]) behind
//! traits, combined by [`Storage`], which is all the handlers see.
//!
//! The default backends are SQLite ([`SqliteMeta`], WAL, versioned migrations) and files
//! under the data directory ([`FsBlobs`], named by SHA-256). Another backend (PostgreSQL
//! for metadata, an S3-compatible store for blobs) implements the same two traits; the
//! handlers and the cache do not change. The traits are synchronous: the server calls
//! them from its blocking thread pool, never on the async workers.

mod fs;
mod sqlite;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use fs::FsBlobs;
pub use sqlite::SqliteMeta;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {0} is missing from the blob store")]
    BlobMissing(String),
    #[error("the database schema is version {found}, newer than this server knows ({known}); upgrade prof")]
    SchemaTooNew { found: i64, known: i64 },
}

impl StoreError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            what: what.into(),
            source,
        }
    }
}

/// Weight per tier, by tier name (`interpreter`, `warmup`, `jit`, `native`, `gc`, `kernel`).
pub type TierTotals = std::collections::BTreeMap<String, u64>;

/// What is stored about one profile (its bytes are the blob `blob`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProfileRecord {
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub created_unix_ms: i64,
    /// Bytes of the profile.
    pub size: u64,
    /// Blob key (SHA-256 of the bytes, hex).
    pub blob: String,
    /// The first process's command line.
    pub command: String,
    pub processes: u32,
    pub threads: u32,
    pub samples: u64,
    pub weight: u64,
    pub duration_s: f64,
    pub start_unix_ns: u64,
    /// `cpu` or `wall`.
    pub mode: String,
    /// The log ends inside a record.
    pub truncated: bool,
    /// Build ids (hex) of the modules the profile records.
    pub build_ids: Vec<String>,
    /// Weight per tier, once the profile has been analyzed.
    pub tiers: Option<TierTotals>,
}

/// A debug file (or unstripped binary) stored for a build id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SymbolRecord {
    /// Lower-case hex.
    pub build_id: String,
    pub blob: String,
    pub size: u64,
    pub uploaded_unix_ms: i64,
}

/// A page of the profile list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub limit: u32,
    pub offset: u64,
    /// Profiles whose name contains this (case-insensitive).
    pub name: Option<String>,
    /// Profiles with this tag.
    pub tag: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ListPage {
    /// Profiles matching the query, all pages together.
    pub total: u64,
    pub items: Vec<ProfileRecord>,
}

/// Totals for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub profiles: u64,
    pub profile_bytes: u64,
    pub symbols: u64,
    pub symbol_bytes: u64,
}

/// Profile and symbol metadata.
pub trait MetaStore: Send + Sync {
    /// Adds a profile (its id is new).
    fn insert_profile(&self, p: &ProfileRecord) -> Result<(), StoreError>;
    fn profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError>;
    fn list_profiles(&self, q: &ListQuery) -> Result<ListPage, StoreError>;
    /// Removes a profile's record and returns it (None: there was none).
    fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError>;
    /// Records a profile's tier totals (computed when it is first analyzed).
    fn set_tiers(&self, id: &str, tiers: &TierTotals) -> Result<(), StoreError>;
    /// Adds or replaces the symbol file of a build id; returns the replaced record.
    fn put_symbol(&self, s: &SymbolRecord) -> Result<Option<SymbolRecord>, StoreError>;
    fn symbol(&self, build_id: &str) -> Result<Option<SymbolRecord>, StoreError>;
    /// Whether any profile or symbol record still names this blob.
    fn blob_referenced(&self, blob: &str) -> Result<bool, StoreError>;
    fn counts(&self) -> Result<StoreCounts, StoreError>;
    /// A cheap round trip, for health checks.
    fn ping(&self) -> Result<(), StoreError>;
}

/// Immutable byte blobs named by their content's SHA-256 (hex).
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` (idempotent) and returns their key.
    fn put(&self, bytes: &[u8]) -> Result<String, StoreError>;
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// A local file holding the blob, for memory-mapping (a remote store downloads it
    /// into a local cache first).
    fn local_path(&self, key: &str) -> Result<PathBuf, StoreError>;
    /// Removes a blob; a missing blob is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// SHA-256 of `bytes`, lower-case hex: the blob key.
pub fn blob_key(bytes: &[u8]) -> String {
    use sha2::Digest;
    prof_analysis::hex(&sha2::Sha256::digest(bytes))
}

/// Metadata and blobs together. Blob writes and deletes are serialized with record
/// changes, so a delete never removes a blob that a concurrent upload of the same bytes
/// is about to reference.
pub struct Storage {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    blob_lock: Mutex<()>,
}

impl Storage {
    pub fn new(meta: Arc<dyn MetaStore>, blobs: Arc<dyn BlobStore>) -> Storage {
        Storage {
            meta,
            blobs,
            blob_lock: Mutex::new(()),
        }
    }

    /// SQLite + files under `dir` (`dir/prof.db`, `dir/blobs/`).
    pub fn open_local(dir: &std::path::Path) -> Result<Storage, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::io(format!("creating {}", dir.display()), e))?;
        let meta = SqliteMeta::open(&dir.join("prof.db"))?;
        let blobs = FsBlobs::open(&dir.join("blobs"))?;
        Ok(Storage::new(Arc::new(meta), Arc::new(blobs)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.blob_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a new profile: its bytes first, then its record (whose `blob` and `size`
    /// are filled in here).
    pub fn add_profile(&self, mut rec: ProfileRecord, bytes: &[u8]) -> Result<(), StoreError> {
        let _g = self.lock();
        rec.blob = self.blobs.put(bytes)?;
        rec.size = bytes.len() as u64;
        self.meta.insert_profile(&rec)
    }

    pub fn profile_bytes(&self, rec: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
        self.blobs.get(&rec.blob)
    }

    /// Deletes a profile's record, then its blob unless another record shares it.
    pub fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let _g = self.lock();
        let Some(rec) = self.meta.delete_profile(id)? else {
            return Ok(None);
        };
        if !self.meta.blob_referenced(&rec.blob)? {
            self.blobs.delete(&rec.blob)?;
        }
        Ok(Some(rec))
    }

    /// Stores the symbol file of `build_id`; returns whether it replaced another file.
    pub fn put_symbol(&self, build_id: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let _g = self.lock();
        let blob = self.blobs.put(bytes)?;
        let old = self.meta.put_symbol(&SymbolRecord {
            build_id: build_id.to_string(),
            blob: blob.clone(),
            size: bytes.len() as u64,
            uploaded_unix_ms: now_ms(),
        })?;
        if let Some(old) = &old {
            if old.blob != blob && !self.meta.blob_referenced(&old.blob)? {
                self.blobs.delete(&old.blob)?;
            }
        }
        Ok(old.is_some())
    }

    /// A local file holding the symbol file of `build_id`, if one was uploaded.
    pub fn symbol_path(&self, build_id: &str) -> Result<Option<PathBuf>, StoreError> {
        match self.meta.symbol(build_id)? {
            Some(s) => Ok(Some(self.blobs.local_path(&s.blob)?)),
            None => Ok(None),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
