//! Package files, content-addressed by SHA-256: staged locally while an upload streams in, then stored through
//! `object_store` (a local directory by default; any `object_store` backend is a configuration change).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::RegistryError;

/// Where package blobs live.
const PREFIX: &str = "sha256";
const CHUNK: usize = 1024 * 1024;

/// An upload written to the local staging directory, with its digest and size.
#[derive(Debug)]
pub struct Staged {
    /// The staged file; removed when this value drops.
    pub path: PathBuf,
    /// Lowercase hex SHA-256.
    pub digest: String,
    /// Bytes.
    pub size: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        drop(std::fs::remove_file(&self.path));
    }
}

/// The package store plus its local staging directory.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    store: Arc<dyn ObjectStore>,
    staging: PathBuf,
}

fn io(context: &str, path: &Path) -> impl FnOnce(std::io::Error) -> RegistryError {
    let message = format!("{context} {}", path.display());
    move |e| RegistryError::Io(format!("{message}: {e}"))
}

impl ArtifactStore {
    /// Blobs under `dir` on the local file system, staging under `staging`; both are created if missing.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when a directory cannot be created.
    pub fn local(dir: &Path, staging: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(dir).map_err(io("cannot create", dir))?;
        let store = LocalFileSystem::new_with_prefix(dir)?;
        Self::new(Arc::new(store), staging)
    }

    /// Blobs in any `object_store` backend, staging under `staging`.
    ///
    /// # Errors
    /// [`RegistryError::Io`] when the staging directory cannot be created.
    pub fn new(store: Arc<dyn ObjectStore>, staging: &Path) -> Result<Self, RegistryError> {
        std::fs::create_dir_all(staging).map_err(io("cannot create", staging))?;
        Ok(Self { store, staging: staging.to_owned() })
    }

    fn key(digest: &str) -> StorePath {
        StorePath::from(format!("{PREFIX}/{digest}.ferry"))
    }

    /// Streams `body` into a staging file, hashing as it goes; refuses more than `limit` bytes.
    ///
    /// # Errors
    /// [`RegistryError::TooLarge`] past the limit (the partial file is removed), I/O errors, or the body's error.
    pub async fn stage<S, E>(&self, body: S, limit: u64) -> Result<Staged, RegistryError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let name = format!("{}-{:016x}.upload", std::process::id(), rand_u64());
        let path = self.staging.join(name);
        let mut file = tokio::fs::File::create(&path).await.map_err(io("cannot create", &path))?;
        // From here on the file is removed if anything fails, because `Staged` owns it.
        let mut staged = Staged { path: path.clone(), digest: String::new(), size: 0 };
        let mut hasher = Sha256::new();
        let mut body = body;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Invalid(format!("the upload was interrupted: {e}")))?;
            staged.size += chunk.len() as u64;
            if staged.size > limit {
                return Err(RegistryError::TooLarge { limit });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io("cannot write", &path))?;
        }
        file.sync_all().await.map_err(io("cannot sync", &path))?;
        staged.digest = hex::encode(hasher.finalize());
        Ok(staged)
    }

    /// Stores a staged file under its digest, then reads it back and checks the digest, so that a version is
    /// registered only over a blob known to be whole.
    ///
    /// # Errors
    /// Store errors, or [`RegistryError::Artifacts`] when the stored copy does not hash to the digest.
    pub async fn store(&self, staged: &Staged) -> Result<(), RegistryError> {
        let key = Self::key(&staged.digest);
        if self.store.head(&key).await.is_err() {
            let upload = self.store.put_multipart(&key).await?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK * 8);
            let mut file = tokio::fs::File::open(&staged.path).await.map_err(io("cannot open", &staged.path))?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).await.map_err(io("cannot read", &staged.path))?;
                if n == 0 {
                    break;
                }
                writer.wait_for_capacity(4).await?;
                writer.write(&buf[..n]);
            }
            writer.finish().await?;
        }
        let (digest, size) = self.hash_stored(&staged.digest).await?;
        if digest != staged.digest || size != staged.size {
            drop(self.store.delete(&key).await);
            return Err(RegistryError::Artifacts(format!(
                "the stored copy of {} reads back as {digest} ({size} bytes); not registered",
                staged.digest
            )));
        }
        Ok(())
    }

    async fn hash_stored(&self, digest: &str) -> Result<(String, u64), RegistryError> {
        let mut stream = self.store.get(&Self::key(digest)).await?.into_stream();
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// The blob's bytes as a stream, and its size.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the blob is missing.
    pub async fn open(
        &self,
        digest: &str,
    ) -> Result<(u64, impl Stream<Item = Result<Bytes, RegistryError>> + Send + use<>), RegistryError> {
        let got = self.store.get(&Self::key(digest)).await?;
        let size = got.meta.size;
        Ok((size, got.into_stream().map_err(RegistryError::from)))
    }

    /// Copies the blob to a local file (written beside it and renamed, so the file is whole or absent).
    ///
    /// # Errors
    /// Store or I/O errors.
    pub async fn download_to(&self, digest: &str, target: &Path) -> Result<(), RegistryError> {
        let (_, mut stream) = self.open(digest).await?;
        let partial = target.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(io("cannot create", &partial))?;
        while let Some(chunk) = stream.next().await {
            file.write_all(&chunk?).await.map_err(io("cannot write", &partial))?;
        }
        file.sync_all().await.map_err(io("cannot sync", &partial))?;
        tokio::fs::rename(&partial, target).await.map_err(io("cannot rename", &partial))?;
        Ok(())
    }

    /// Deletes a blob (no error if it is already gone).
    ///
    /// # Errors
    /// Store errors other than not-found.
    pub async fn delete(&self, digest: &str) -> Result<(), RegistryError> {
        match self.store.delete(&Self::key(digest)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Digests of stored blobs older than `grace`.
    ///
    /// # Errors
    /// Store errors.
    pub async fn list_older_than(&self, grace: Duration) -> Result<Vec<String>, RegistryError> {
        let prefix = StorePath::from(PREFIX);
        let now = SystemTime::now();
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&prefix));
        while let Some(meta) = listing.try_next().await? {
            let age = now.duration_since(SystemTime::from(meta.last_modified)).unwrap_or_default();
            let Some(name) = meta.location.filename() else { continue };
            if let Some(digest) = name.strip_suffix(".ferry")
                && age >= grace
            {
                out.push(digest.to_owned());
            }
        }
        Ok(out)
    }

    /// Removes staged files left by a process that died mid-upload (any staging file older than `grace`).
    ///
    /// # Errors
    /// I/O errors reading the staging directory.
    pub fn clean_staging(&self, grace: Duration) -> Result<usize, RegistryError> {
        let mut removed = 0;
        let entries = std::fs::read_dir(&self.staging).map_err(io("cannot read", &self.staging))?;
        for entry in entries.filter_map(Result::ok) {
            let old = entry
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default() >= grace)
                .unwrap_or(false);
            if old
                && entry.path().extension().is_some_and(|e| e == "upload" || e == "partial")
                && std::fs::remove_file(entry.path()).is_ok()
            {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The staging directory (packages are verified there before they are stored).
    #[must_use]
    pub fn staging_dir(&self) -> &Path {
        &self.staging
    }
}

/// A random number for file names; uniqueness across processes matters, not quality.
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.finish()
}

pub(crate) fn random_id() -> u64 {
    rand_u64()
}
