//! The checkpoint store contract (`checkpoint_contract`) against the memory
//! and the file stores. The DynamoDB + S3 store runs it in its own
//! integration tests, against the emulator.

use std::path::PathBuf;

use unistream_core::Result;
use unistream_core::memory::MemoryCheckpointStore;
use unistream_local::{Durability, FileCheckpointStore};
use unistream_test_support::checkpoint_contract::{Checked, StoreUnderTest, check_all};

struct Memory(MemoryCheckpointStore);

impl StoreUnderTest for Memory {
    type Store = MemoryCheckpointStore;
    async fn open(&mut self) -> Result<MemoryCheckpointStore> {
        Ok(self.0.clone())
    }
    fn excludes_owners(&self) -> bool {
        false
    }
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn journals(&self) -> Vec<PathBuf> {
        std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".journal"))
            .collect()
    }
}

impl StoreUnderTest for Files {
    type Store = FileCheckpointStore;
    async fn open(&mut self) -> Result<FileCheckpointStore> {
        FileCheckpointStore::open(self.dir.path(), "contract", Durability::Process)
    }
    async fn corrupt(&mut self) -> bool {
        let journals = self.journals();
        assert!(!journals.is_empty(), "no journal to corrupt");
        for j in journals {
            std::fs::write(&j, b"{\"not\": \"a journal\"}\n").unwrap();
        }
        true
    }
    fn excludes_owners(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    let checked = check_all(|| Memory(MemoryCheckpointStore::default())).await;
    // Memory holds no foreign data and has no owner exclusion (record
    // locks stand in for it): those two checks do not apply.
    assert_eq!(
        checked,
        [
            Checked::Passed,
            Checked::Passed,
            Checked::Skipped,
            Checked::Skipped
        ]
    );
}

#[tokio::test]
async fn the_file_store_keeps_the_contract() {
    let checked = check_all(|| Files {
        dir: tempfile::tempdir().unwrap(),
    })
    .await;
    assert_eq!(checked, [Checked::Passed; 4]);
}
