//! Blobs as files: `DIR/ab/cdef…` for the key `abcdef…` (SHA-256, hex). Writes go to a
//! temporary file in `DIR/tmp/`, are synced, then renamed into place, so a blob file is
//! either absent or whole, even if the server dies mid-write.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{BlobEntry, BlobStore, StoreError};

pub struct FsBlobs {
    dir: PathBuf,
}

impl FsBlobs {
    pub fn open(dir: &Path) -> Result<FsBlobs, StoreError> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp)
            .map_err(|e| StoreError::io(format!("creating {}", tmp.display()), e))?;
        // Leftovers of writes a previous run did not finish.
        if let Ok(entries) = fs::read_dir(&tmp) {
            for e in entries.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(FsBlobs {
            dir: dir.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let valid = key.len() == 64 && key.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(StoreError::BlobMissing(key.to_string()));
        }
        Ok(self.dir.join(&key[..2]).join(&key[2..]))
    }
}

impl BlobStore for FsBlobs {
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let path = self.path(key)?;
        if path.is_file() {
            return Ok(());
        }
        let parent = path.parent().unwrap_or(&self.dir);
        fs::create_dir_all(parent)
            .map_err(|e| StoreError::io(format!("creating {}", parent.display()), e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.dir.join("tmp"))
            .map_err(|e| StoreError::io("creating a temporary blob file", e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| StoreError::io("writing a blob", e))?;
        tmp.persist(&path)
            .map_err(|e| StoreError::io(format!("storing {}", path.display()), e.error))?;
        // The rename is durable once the directory is synced.
        fs::File::open(parent)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(format!("syncing {}", parent.display()), e))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.path(key)?;
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => StoreError::BlobMissing(key.to_string()),
            _ => StoreError::io(format!("reading {}", path.display()), e),
        })
    }

    fn local_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let path = self.path(key)?;
        if path.is_file() {
            Ok(path)
        } else {
            Err(StoreError::BlobMissing(key.to_string()))
        }
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(format!("removing {}", path.display()), e)),
        }
    }

    fn list(&self) -> Result<Vec<BlobEntry>, StoreError> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.dir)
            .map_err(|e| StoreError::io(format!("listing {}", self.dir.display()), e))?;
        for top in rd.flatten() {
            let name = top.file_name().to_string_lossy().into_owned();
            if name.len() != 2 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(inner) = fs::read_dir(top.path()) else {
                continue;
            };
            for f in inner.flatten() {
                let rest = f.file_name().to_string_lossy().into_owned();
                let key = format!("{name}{rest}");
                if self.path(&key).is_err() {
                    continue;
                }
                if let Ok(md) = f.metadata() {
                    out.push(BlobEntry {
                        key,
                        modified: md.modified().unwrap_or(std::time::UNIX_EPOCH),
                    });
                }
            }
        }
        Ok(out)
    }

    fn check(&self, write: bool) -> Result<(), StoreError> {
        let tmp = self.dir.join("tmp");
        if !write {
            return fs::metadata(&tmp)
                .map(|_| ())
                .map_err(|e| StoreError::io(format!("reading {}", tmp.display()), e));
        }
        // A real write, synced: a read-only, deleted or full directory fails it.
        let mut f = tempfile::NamedTempFile::new_in(&tmp)
            .map_err(|e| StoreError::io(format!("writing in {}", tmp.display()), e))?;
        f.write_all(&[0u8; 4096])
            .and_then(|()| f.as_file().sync_all())
            .map_err(|e| StoreError::io(format!("writing in {}", tmp.display()), e))?;
        Ok(())
    }

    fn local_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    fn kind(&self) -> &'static str {
        "file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete_are_content_addressed() {
        let dir = tempfile::tempdir().unwrap();
        let b = FsBlobs::open(dir.path()).unwrap();
        let k = crate::store::blob_key(b"hello");
        b.put(&k, b"hello").unwrap();
        b.put(&k, b"hello").unwrap();
        assert_eq!(b.list().unwrap().len(), 1);
        b.check(true).unwrap();
        assert_eq!(b.get(&k).unwrap(), b"hello");
        assert!(b.local_path(&k).unwrap().ends_with(&k[2..]));
        b.delete(&k).unwrap();
        b.delete(&k).unwrap();
        assert!(matches!(b.get(&k), Err(StoreError::BlobMissing(_))));
        assert!(matches!(
            b.get("../../etc/passwd"),
            Err(StoreError::BlobMissing(_))
        ));
    }
}
