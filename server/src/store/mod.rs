//! Storage: metadata ([`MetaStore`]) and content-addressed blobs ([`BlobStore`]) behind
//! traits, combined by [`Storage`], which is all the handlers see.
//!
//! The default backends are SQLite ([`SqliteMeta`], WAL, versioned migrations) and files
//! under the data directory ([`FsBlobs`]). For several replicas, PostgreSQL ([`PgMeta`],
//! pooled connections, migrations under an advisory lock) and an S3-compatible bucket
//! ([`S3Blobs`]) implement the same traits; the handlers and the cache do not change. The
//! traits are synchronous: the server calls them from its blocking thread pool (and its
//! background jobs' threads), never on the async workers.

mod fs;
mod postgres;
mod s3;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use self::postgres::{redact as redact_url, PgMeta};
pub use fs::FsBlobs;
pub use s3::{S3Blobs, S3Config};
pub use sqlite::SqliteMeta;

/// A storage failure. Each message carries its cause once (no `source()` chain that
/// would print it again).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(String),
    #[error("{what}: {cause}")]
    Io { what: String, cause: std::io::Error },
    #[error("object store: {0}")]
    Remote(String),
    #[error("blob {0} is missing from the blob store")]
    BlobMissing(String),
    /// An insert met an existing row with the same key (a profile id drawn twice).
    #[error("a record with key {0} already exists")]
    Duplicate(String),
    #[error("the database schema is version {found}, newer than this server knows ({known}); upgrade prof")]
    SchemaTooNew { found: i64, known: i64 },
    #[error("{0}")]
    Config(String),
}

impl StoreError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            what: what.into(),
            cause: source,
        }
    }

    /// The disk (or the database's) is full: the request cannot be stored now.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Io { cause, .. } => {
                cause.kind() == std::io::ErrorKind::StorageFull
                    || cause.raw_os_error() == Some(libc_enospc())
            }
            StoreError::Database(m) => m.contains("full"),
            _ => false,
        }
    }
}

fn libc_enospc() -> i32 {
    28
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

/// Profile and symbol metadata. Implementations must be safe to share between replicas
/// (several servers on one database): every method is one transaction.
pub trait MetaStore: Send + Sync {
    /// Adds a profile; [`StoreError::Duplicate`] if its id exists.
    fn insert_profile(&self, p: &ProfileRecord) -> Result<(), StoreError>;
    fn profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError>;
    fn list_profiles(&self, q: &ListQuery) -> Result<ListPage, StoreError>;
    /// Removes a profile's record and returns it (None: there was none).
    fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError>;
    /// Records a profile's tier totals (computed when it is first analyzed).
    fn set_tiers(&self, id: &str, tiers: &TierTotals) -> Result<(), StoreError>;
    /// Adds or replaces the symbol file of a build id; returns the replaced record. Each
    /// put draws a new, larger symbol sequence number (see [`MetaStore::symbol_seq`]).
    fn put_symbol(&self, s: &SymbolRecord) -> Result<Option<SymbolRecord>, StoreError>;
    fn symbol(&self, build_id: &str) -> Result<Option<SymbolRecord>, StoreError>;
    /// The largest symbol sequence number among these build ids (0: none has symbols):
    /// a prepared profile is stale when this grew since it was prepared, whichever
    /// replica took the upload.
    fn symbol_seq(&self, build_ids: &[String]) -> Result<i64, StoreError>;
    /// How many profile and symbol records name this blob.
    fn blob_refs(&self, blob: &str) -> Result<u64, StoreError>;
    /// Ids of profiles created before `before_ms`, or beyond the newest `keep` (oldest
    /// first, at most `limit`): what retention removes.
    fn expired_profiles(
        &self,
        before_ms: Option<i64>,
        keep: Option<u64>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;
    fn counts(&self) -> Result<StoreCounts, StoreError>;
    /// A cheap read round trip (readiness).
    fn ping(&self) -> Result<(), StoreError>;
    /// A small write (health: a read-only or full database fails it).
    fn check_writable(&self) -> Result<(), StoreError>;
    /// `sqlite` or `postgres`, for /metrics.
    fn kind(&self) -> &'static str;
}

/// A blob in a listing, with its age (orphans younger than a grace period are left alone:
/// their upload may be about to insert its row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobEntry {
    pub key: String,
    pub modified: std::time::SystemTime,
}

/// Immutable byte blobs named by 64 hex digits. A `put` is atomic and durable when it
/// returns: a blob is either absent or whole.
pub trait BlobStore: Send + Sync {
    /// Stores `bytes` under `key` (idempotent).
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError>;
    /// A local file holding the blob, for memory-mapping (a remote store downloads it
    /// into a local cache first).
    fn local_path(&self, key: &str) -> Result<PathBuf, StoreError>;
    /// Removes a blob; a missing blob is not an error.
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Every blob (for the orphan sweeper).
    fn list(&self) -> Result<Vec<BlobEntry>, StoreError>;
    /// Whether the store answers (`write`: and accepts a small write).
    fn check(&self, write: bool) -> Result<(), StoreError>;
    /// The local directory files from [`BlobStore::local_path`] live under (the
    /// symbolizer may read there).
    fn local_dir(&self) -> PathBuf;
    /// `file` or `s3`, for /metrics.
    fn kind(&self) -> &'static str;
}

/// SHA-256 of `bytes`, lower-case hex: the key of a symbol file's blob.
pub fn blob_key(bytes: &[u8]) -> String {
    use sha2::Digest;
    prof_analysis::hex(&sha2::Sha256::digest(bytes))
}

/// The key of a profile's blob: SHA-256 of its id and bytes, so no two profiles share a
/// blob and deleting one can never remove another's bytes (replicas need no shared lock).
pub fn profile_blob_key(id: &str, bytes: &[u8]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(id.as_bytes());
    h.update([0u8]);
    h.update(bytes);
    prof_analysis::hex(&h.finalize())
}

/// Where metadata and blobs live, parsed from `--db` / `--store` URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    File(PathBuf),
    /// Bucket and key prefix (without slashes at either end; may be empty).
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl DbUrl {
    pub fn parse(s: &str) -> Result<DbUrl, StoreError> {
        if let Some(p) = s.strip_prefix("sqlite:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(StoreError::Config("--db sqlite:PATH needs a path".into()));
            }
            return Ok(DbUrl::Sqlite(PathBuf::from(p)));
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            return Ok(DbUrl::Postgres(s.to_string()));
        }
        Err(StoreError::Config(format!(
            "--db {s:?}: expected sqlite:PATH or postgres://USER@HOST/DB"
        )))
    }
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, StoreError> {
        if let Some(p) = s.strip_prefix("file:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err(StoreError::Config(
                    "--store file:DIR needs a directory".into(),
                ));
            }
            return Ok(StoreUrl::File(PathBuf::from(p)));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StoreError::Config(format!(
                    "--store {s:?}: expected s3://BUCKET/PREFIX"
                )));
            }
            return Ok(StoreUrl::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(StoreError::Config(format!(
            "--store {s:?}: expected file:DIR or s3://BUCKET/PREFIX"
        )))
    }
}

/// Metadata and blobs together, with the orderings that keep them consistent:
/// - an upload writes its blob (durably), then its row: a row never names a blob that is
///   not whole; a crash between the two leaves an orphan blob, which
///   [`Storage::sweep_orphans`] removes;
/// - a delete removes the blob, then the row: a failure leaves the record (and the
///   request can be retried), never an unreferenced blob; on a full disk, removing the
///   blob first frees the space the database needs to delete the row.
pub struct Storage {
    pub meta: Arc<dyn MetaStore>,
    pub blobs: Arc<dyn BlobStore>,
    /// Symbol replacement checks and deletes shared (content-addressed) symbol blobs:
    /// serialized within a replica.
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
        Storage::open(
            &DbUrl::Sqlite(dir.join("prof.db")),
            &StoreUrl::File(dir.join("blobs")),
            dir,
            None,
        )
    }

    /// The backends named by `db` and `store`; `local` holds local caches (remote blobs
    /// downloaded for symbolization); `s3`: the S3 settings (None: from the AWS
    /// environment variables).
    pub fn open(
        db: &DbUrl,
        store: &StoreUrl,
        local: &Path,
        s3: Option<&S3Config>,
    ) -> Result<Storage, StoreError> {
        let meta: Arc<dyn MetaStore> = match db {
            DbUrl::Sqlite(path) => {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
                }
                Arc::new(SqliteMeta::open(path)?)
            }
            DbUrl::Postgres(url) => Arc::new(PgMeta::open(url)?),
        };
        let blobs: Arc<dyn BlobStore> = match store {
            StoreUrl::File(dir) => Arc::new(FsBlobs::open(dir)?),
            StoreUrl::S3 { bucket, prefix } => {
                let cfg = match s3 {
                    Some(c) => c.clone(),
                    None => S3Config::from_env()?,
                };
                Arc::new(S3Blobs::open(
                    &cfg,
                    bucket,
                    prefix,
                    &local.join("s3-cache"),
                )?)
            }
        };
        Ok(Storage::new(meta, blobs))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.blob_lock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores a new profile: its bytes first (durably), then its record (whose `blob` and
    /// `size` are filled in here). When the record cannot be written, the blob is removed
    /// again (best effort: the sweeper removes what remains).
    pub fn add_profile(&self, mut rec: ProfileRecord, bytes: &[u8]) -> Result<(), StoreError> {
        rec.blob = profile_blob_key(&rec.id, bytes);
        rec.size = bytes.len() as u64;
        self.blobs.put(&rec.blob, bytes)?;
        if let Err(e) = self.meta.insert_profile(&rec) {
            let _ = self.blobs.delete(&rec.blob);
            return Err(e);
        }
        Ok(())
    }

    pub fn profile_bytes(&self, rec: &ProfileRecord) -> Result<Vec<u8>, StoreError> {
        self.blobs.get(&rec.blob)
    }

    /// Deletes a profile: its blob first (unless another record still names it: profiles
    /// stored before blobs were per profile may share one), then its record.
    pub fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let Some(rec) = self.meta.profile(id)? else {
            return Ok(None);
        };
        {
            let _g = self.lock();
            if self.meta.blob_refs(&rec.blob)? <= 1 {
                self.blobs.delete(&rec.blob)?;
            }
        }
        Ok(self.meta.delete_profile(id)?.or(Some(rec)))
    }

    /// Stores the symbol file of `build_id`; returns whether it replaced another file.
    pub fn put_symbol(&self, build_id: &str, bytes: &[u8]) -> Result<bool, StoreError> {
        let _g = self.lock();
        let blob = blob_key(bytes);
        self.blobs.put(&blob, bytes)?;
        let old = self.meta.put_symbol(&SymbolRecord {
            build_id: build_id.to_string(),
            blob: blob.clone(),
            size: bytes.len() as u64,
            uploaded_unix_ms: now_ms(),
        })?;
        if let Some(old) = &old {
            if old.blob != blob && self.meta.blob_refs(&old.blob)? == 0 {
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

    /// Removes blobs that no record names and that are older than `grace` (younger ones
    /// may belong to an upload about to write its row). Returns how many were removed.
    pub fn sweep_orphans(&self, grace: std::time::Duration) -> Result<u64, StoreError> {
        let now = std::time::SystemTime::now();
        let mut removed = 0;
        for b in self.blobs.list()? {
            let old_enough = now.duration_since(b.modified).is_ok_and(|age| age >= grace);
            if !old_enough {
                continue;
            }
            let _g = self.lock();
            if self.meta.blob_refs(&b.key)? == 0 {
                self.blobs.delete(&b.key)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Deletes profiles older than `keep_days` or beyond the newest `max_profiles`.
    /// Returns the ids deleted.
    pub fn apply_retention(
        &self,
        keep_days: Option<u32>,
        max_profiles: Option<u64>,
    ) -> Result<Vec<String>, StoreError> {
        if keep_days.is_none() && max_profiles.is_none() {
            return Ok(Vec::new());
        }
        let before = keep_days.map(|d| now_ms() - i64::from(d) * 86_400_000);
        let mut gone = Vec::new();
        loop {
            let ids = self.meta.expired_profiles(before, max_profiles, 500)?;
            if ids.is_empty() {
                return Ok(gone);
            }
            for id in ids {
                if self.delete_profile(&id)?.is_some() {
                    gone.push(id);
                }
            }
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
