//! Blobs in an S3-compatible bucket (AWS, MinIO, Ceph, R2...), as objects
//! `PREFIX/blobs/KEY`. Settings come from the standard AWS environment:
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), `AWS_REGION`
//! (default `us-east-1`) and `AWS_ENDPOINT_URL` for a store other than AWS (plain `http://`
//! allowed; path-style addressing). A PUT is atomic: an object is either absent or whole.
//! Symbol files are downloaded once into a local cache directory for memory-mapping.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use s3::creds::Credentials;
use s3::{Bucket, Region};

use super::{BlobEntry, BlobStore, StoreError};

pub struct S3Blobs {
    bucket: Box<Bucket>,
    /// `PREFIX/blobs/` (or `blobs/`).
    prefix: String,
    cache: PathBuf,
}

fn remote(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Remote(format!("{what}: {e}"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn valid_key(key: &str) -> bool {
    key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where the bucket is and how to sign for it.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Config {
    /// `http(s)://host:port` of an S3-compatible store; None: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// From the standard AWS environment variables.
    pub fn from_env() -> Result<S3Config, StoreError> {
        let missing = |name: &str| {
            StoreError::Config(format!(
                "S3 needs {name} (and AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY; AWS_ENDPOINT_URL for a store other than AWS)"
            ))
        };
        Ok(S3Config {
            endpoint: env("AWS_ENDPOINT_URL_S3").or_else(|| env("AWS_ENDPOINT_URL")),
            region: env("AWS_REGION")
                .or_else(|| env("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key: env("AWS_ACCESS_KEY_ID").ok_or_else(|| missing("AWS_ACCESS_KEY_ID"))?,
            secret_key: env("AWS_SECRET_ACCESS_KEY")
                .ok_or_else(|| missing("AWS_SECRET_ACCESS_KEY"))?,
            session_token: env("AWS_SESSION_TOKEN"),
        })
    }
}

impl S3Blobs {
    /// Connects to `bucket` (which must exist); `cache` is the local directory for
    /// downloaded symbol files.
    pub fn open(
        cfg: &S3Config,
        bucket: &str,
        prefix: &str,
        cache: &Path,
    ) -> Result<S3Blobs, StoreError> {
        let region = match &cfg.endpoint {
            Some(endpoint) => Region::Custom {
                region: cfg.region.clone(),
                endpoint: endpoint.trim_end_matches('/').to_string(),
            },
            None => cfg
                .region
                .parse()
                .map_err(|e| StoreError::Config(format!("AWS_REGION {:?}: {e}", cfg.region)))?,
        };
        let creds = Credentials::new(
            Some(&cfg.access_key),
            Some(&cfg.secret_key),
            None,
            cfg.session_token.as_deref(),
            None,
        )
        .map_err(|e| StoreError::Config(format!("S3 credentials: {e}")))?;
        let b = Bucket::new(bucket, region, creds)
            .map_err(|e| remote("configuring the bucket", e))?
            .with_path_style()
            .with_request_timeout(Duration::from_secs(60))
            .map_err(|e| remote("configuring the bucket", e))?;
        std::fs::create_dir_all(cache.join("tmp"))
            .map_err(|e| StoreError::io(format!("creating {}", cache.display()), e))?;
        let prefix = if prefix.is_empty() {
            "blobs/".to_string()
        } else {
            format!("{prefix}/blobs/")
        };
        let s = S3Blobs {
            bucket: b,
            prefix,
            cache: cache.to_path_buf(),
        };
        s.check(false)?;
        Ok(s)
    }

    fn object(&self, key: &str) -> Result<String, StoreError> {
        if !valid_key(key) {
            return Err(StoreError::BlobMissing(key.to_string()));
        }
        Ok(format!("{}{key}", self.prefix))
    }
}

/// Checks a response's status: 2xx is success, 404 a missing blob.
fn status(what: &str, key: &str, code: u16, body: &[u8]) -> Result<(), StoreError> {
    match code {
        200..=299 => Ok(()),
        404 => Err(StoreError::BlobMissing(key.to_string())),
        _ => Err(StoreError::Remote(format!(
            "{what} {key}: HTTP {code}: {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        ))),
    }
}

impl BlobStore for S3Blobs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let obj = self.object(key)?;
        let r = self
            .bucket
            .put_object(&obj, bytes)
            .map_err(|e| remote("storing a blob", e))?;
        status("storing", key, r.status_code(), r.as_slice())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let obj = self.object(key)?;
        let r = self
            .bucket
            .get_object(&obj)
            .map_err(|e| remote("reading a blob", e))?;
        status("reading", key, r.status_code(), r.as_slice())?;
        Ok(r.to_vec())
    }

    fn local_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        self.object(key)?;
        let path = self.cache.join(key);
        if path.is_file() {
            return Ok(path);
        }
        // Blobs are immutable: a cached copy never goes stale. Written aside and renamed,
        // so a concurrent reader never maps half a file.
        let bytes = self.get(key)?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.cache.join("tmp"))
            .map_err(|e| StoreError::io("creating a cache file", e))?;
        tmp.write_all(&bytes)
            .map_err(|e| StoreError::io("writing a cache file", e))?;
        tmp.persist(&path)
            .map_err(|e| StoreError::io(format!("storing {}", path.display()), e.error))?;
        Ok(path)
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let obj = self.object(key)?;
        let r = self
            .bucket
            .delete_object(&obj)
            .map_err(|e| remote("removing a blob", e))?;
        match status("removing", key, r.status_code(), r.as_slice()) {
            Ok(()) | Err(StoreError::BlobMissing(_)) => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(self.cache.join(key));
        Ok(())
    }

    fn list(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let pages = self
            .bucket
            .list(self.prefix.clone(), None)
            .map_err(|e| remote("listing blobs", e))?;
        let mut out = Vec::new();
        for page in pages {
            for o in page.contents {
                let Some(key) = o.key.strip_prefix(&self.prefix) else {
                    continue;
                };
                if !valid_key(key) {
                    continue;
                }
                let modified = time::OffsetDateTime::parse(
                    &o.last_modified,
                    &time::format_description::well_known::Rfc3339,
                )
                .map(std::time::SystemTime::from)
                // An unreadable date: treat the blob as new (never swept by mistake).
                .unwrap_or_else(|_| std::time::SystemTime::now());
                out.push(BlobEntry {
                    key: key.to_string(),
                    modified,
                });
            }
        }
        Ok(out)
    }

    fn check(&self, write: bool) -> Result<(), StoreError> {
        let probe = format!("{}health-probe", self.prefix.trim_end_matches("blobs/"));
        if write {
            let r = self
                .bucket
                .put_object(&probe, b"ok")
                .map_err(|e| remote("writing a probe object", e))?;
            status("writing", "the probe object", r.status_code(), r.as_slice())?;
        }
        let (_, code) = self
            .bucket
            .list_page(self.prefix.clone(), None, None, None, Some(1))
            .map_err(|e| remote(&format!("listing bucket {}", self.bucket.name()), e))?;
        if !(200..300).contains(&code) {
            return Err(StoreError::Remote(format!(
                "listing bucket {}: HTTP {code}",
                self.bucket.name()
            )));
        }
        Ok(())
    }

    fn local_dir(&self) -> PathBuf {
        self.cache.clone()
    }

    fn kind(&self) -> &'static str {
        "s3"
    }
}
