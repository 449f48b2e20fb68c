//! [`FileIdempotencyStore`]: idempotency keys as small JSON files in a
//! directory, one per key, replaced atomically (written aside, then
//! renamed): a `kill -9` at any instant leaves every key either as it was
//! or as it became. One process uses a directory at a time (an `flock` on
//! `.lock` proves it); claims are atomic within it.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use unistream_core::idempotency::{
    Claim, Claimed, Completion, IdempotencyItem, IdempotencyStore, ItemStatus, Owner, payload_hash,
};
use unistream_core::{Error, Result};

use crate::{Durability, lock_exclusive};

/// Idempotency keys in a directory (see the module docs).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> unistream_core::Result<()> {
/// use unistream_core::idempotency::{Idempotent, IdempotencyStore};
/// use unistream_local::{Durability, FileIdempotencyStore};
/// # let dir = tempfile::tempdir().unwrap();
/// let keys = FileIdempotencyStore::open(dir.path().join("keys"), Durability::Process)?;
/// assert_eq!(keys.get("order-17").await?, None);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FileIdempotencyStore {
    dir: PathBuf,
    durability: Durability,
    /// Claims and writes, one at a time (the read-compare-replace of a
    /// claim is atomic in this process; the `flock` keeps others out).
    guard: Mutex<()>,
    _lock: fs::File,
}

impl FileIdempotencyStore {
    /// Opens (creating) the directory.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] if another process uses it; [`Error::Io`] if it
    /// cannot be created.
    pub fn open(dir: impl Into<PathBuf>, durability: Durability) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let lock_path = dir.join(".lock");
        let Some(lock) = lock_exclusive(&lock_path)? else {
            return Err(Error::Locked {
                path: lock_path,
                what: "an idempotency store directory used by another process".into(),
            });
        };
        Ok(FileIdempotencyStore {
            dir,
            durability,
            guard: Mutex::new(()),
            _lock: lock,
        })
    }

    /// The file of a key: its SHA-256 (any key is a safe file name).
    fn path(&self, key: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", payload_hash(key.as_bytes())))
    }

    fn read(&self, key: &str) -> Result<Option<IdempotencyItem>> {
        let path = self.path(key);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::Corrupt {
                    path,
                    offset: e.column() as u64,
                    reason: format!("not an idempotency item: {e}"),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn write(&self, item: &IdempotencyItem) -> Result<()> {
        let path = self.path(&item.key);
        let tmp = path.with_extension("tmp");
        let json =
            serde_json::to_vec(item).map_err(|e| Error::backend("idempotency file store", e))?;
        let mut f = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        f.write_all(&json).map_err(|e| Error::io(&tmp, e))?;
        if self.durability == Durability::PowerLoss {
            f.sync_data().map_err(|e| Error::io(&tmp, e))?;
        }
        fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        self.sync_dir()
    }

    fn remove(&self, key: &str) -> Result<()> {
        let path = self.path(key);
        match fs::remove_file(&path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&path, e)),
        }
    }

    fn sync_dir(&self) -> Result<()> {
        if self.durability == Durability::PowerLoss {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _g = self.guard.lock().unwrap_or_else(PoisonError::into_inner);
        f()
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}

impl IdempotencyStore for FileIdempotencyStore {
    async fn claim(&self, claim: &Claim) -> Result<Claimed> {
        self.locked(|| match self.read(&claim.key)? {
            Some(item) if !item.claimable_by(claim) => Ok(item.answer(claim)),
            _ => {
                self.write(&claim.item())?;
                Ok(Claimed::Started)
            }
        })
    }

    async fn complete(&self, completion: &Completion) -> Result<()> {
        self.locked(|| self.write(&completion.item))
    }

    async fn release(&self, key: &str, owner: &Owner) -> Result<()> {
        self.locked(|| match self.read(key)? {
            Some(i) if i.status == ItemStatus::InProgress && i.owner == *owner => self.remove(key),
            _ => Ok(()),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<IdempotencyItem>> {
        self.locked(|| self.read(key))
    }

    async fn forget(&self, key: &str) -> Result<()> {
        self.locked(|| self.remove(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_file_store_passes_the_contract_and_keeps_keys_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        for durability in [Durability::Process, Durability::PowerLoss] {
            let store = FileIdempotencyStore::open(&path, durability).unwrap();
            let prefix = format!("{durability:?}");
            unistream_core::testing::idempotency::check_all(&store, &prefix, chrono::Utc::now())
                .await;
            let kept = store.get(&format!("{prefix}-many-3")).await.unwrap();
            drop(store);
            let reopened = FileIdempotencyStore::open(&path, durability).unwrap();
            assert_eq!(
                reopened.get(&format!("{prefix}-many-3")).await.unwrap(),
                kept
            );
            assert!(kept.is_some());
        }
    }

    #[tokio::test]
    async fn a_damaged_key_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileIdempotencyStore::open(dir.path(), Durability::Process).unwrap();
        fs::write(store.path("k"), b"{ torn").unwrap();
        let err = store.get("k").await.unwrap_err().to_string();
        assert!(err.contains(&payload_hash(b"k")), "{err}");
    }
}
