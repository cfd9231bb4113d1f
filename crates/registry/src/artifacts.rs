//! Package files, content-addressed by SHA-256: staged locally while an upload streams in, then stored through
//! `object_store` (a local directory by default; any `object_store` backend is a configuration change). With a
//! master key, each is stored encrypted (see [`crate::encryption`]) with its wrapped data key beside it
//! (`sha256/<digest>.key`); readers always see the plaintext, and its digest is checked on the way in.

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
use crate::encryption::{HEADER, MasterKey, Opener, SEGMENT, Sealer, TAG, WrappedKey};

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
    master: Option<Arc<MasterKey>>,
    /// Earlier master keys, accepted for reading only: servers keep reading what was stored under the old key while
    /// a rotation runs, and store under the new one.
    previous: Vec<Arc<MasterKey>>,
}

/// What a master-key rotation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Data keys re-wrapped under the new master key (their packages untouched).
    pub rewrapped: usize,
    /// Data keys already under the new master key (an interrupted rotation run again).
    pub already: usize,
    /// Packages stored before encryption was on, now encrypted.
    pub encrypted: usize,
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
        Ok(Self { store, staging: staging.to_owned(), master: None, previous: Vec::new() })
    }

    /// Encrypts packages stored from now on under `master`, and decrypts those it wrapped.
    #[must_use]
    pub fn with_master_key(mut self, master: Option<MasterKey>) -> Self {
        self.master = master.map(Arc::new);
        self
    }

    /// Also reads packages whose data keys earlier master keys wrapped (never stores under them).
    #[must_use]
    pub fn with_previous_master_keys(mut self, previous: Vec<MasterKey>) -> Self {
        self.previous = previous.into_iter().map(Arc::new).collect();
        self
    }

    /// The master key that wrapped `wrapped`, among the current and previous ones; else the current one (whose
    /// refusal then names both fingerprints).
    fn key_for(&self, wrapped: &WrappedKey) -> Option<Arc<MasterKey>> {
        let current = self.master.clone()?;
        if current.id() == wrapped.master_key_id {
            return Some(current);
        }
        Some(self.previous.iter().find(|k| k.id() == wrapped.master_key_id).cloned().unwrap_or(current))
    }

    /// The master key's fingerprint, when encryption is on.
    #[must_use]
    pub fn master_key_id(&self) -> Option<&str> {
        self.master.as_deref().map(MasterKey::id)
    }

    fn key(digest: &str) -> StorePath {
        StorePath::from(format!("{PREFIX}/{digest}.ferry"))
    }

    fn key_file(digest: &str) -> StorePath {
        StorePath::from(format!("{PREFIX}/{digest}.key"))
    }

    /// The package's wrapped data key, or `None` for a package stored in plaintext.
    async fn wrapped_key(&self, digest: &str) -> Result<Option<WrappedKey>, RegistryError> {
        match self.store.get(&Self::key_file(digest)).await {
            Ok(got) => Ok(Some(WrappedKey::parse(digest, &got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `path` to the store under `key`, encrypted for `digest` when `sealer` is given.
    async fn upload(
        &self,
        path: &Path,
        key: &StorePath,
        sealer: Option<(Sealer, Vec<u8>)>,
    ) -> Result<(), RegistryError> {
        let upload = self.store.put_multipart(key).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, CHUNK * 8);
        let mut file = tokio::fs::File::open(path).await.map_err(io("cannot open", path))?;
        let (mut sealer, mut pending) = match sealer {
            Some((sealer, header)) => {
                writer.write(&header);
                (Some(sealer), Vec::with_capacity(SEGMENT * 2))
            }
            None => (None, Vec::new()),
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = file.read(&mut buf).await.map_err(io("cannot read", path))?;
            if n == 0 {
                break;
            }
            writer.wait_for_capacity(4).await?;
            match sealer.as_mut() {
                None => writer.write(&buf[..n]),
                Some(sealer) => {
                    // A segment is sealed as "not last" only once more bytes are known to follow it.
                    pending.extend_from_slice(&buf[..n]);
                    while pending.len() > SEGMENT {
                        writer.write(&sealer.seal_next(&pending[..SEGMENT])?);
                        pending.drain(..SEGMENT);
                    }
                }
            }
        }
        if let Some(sealer) = sealer {
            writer.write(&sealer.seal_last(&pending)?);
        }
        writer.finish().await?;
        Ok(())
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
        let existed = match self.store.head(&key).await {
            Ok(_) => true,
            Err(object_store::Error::NotFound { .. }) => false,
            Err(e) => return Err(e.into()),
        };
        if !existed {
            let sealer = match &self.master {
                Some(master) => Some(self.sealer_for(master, &staged.digest).await?),
                None => None,
            };
            self.upload(&staged.path, &key, sealer).await?;
        }
        let (digest, size) = self.hash_stored(&staged.digest).await?;
        if digest != staged.digest || size != staged.size {
            // Only a blob this call wrote is removed: an existing one may be what a registered version reads.
            if !existed {
                drop(self.store.delete(&key).await);
            }
            return Err(RegistryError::Artifacts(format!(
                "the stored copy of {} reads back as {digest} ({size} bytes); not registered",
                staged.digest
            )));
        }
        Ok(())
    }

    /// The sealer for a new blob of `digest`. The key file goes first (a blob without its key file would read as a
    /// damaged plaintext one) and is created only if absent: when another store of the same package got there first,
    /// its data key is reused, so whichever copy of the blob lands last, the key file opens it.
    async fn sealer_for(&self, master: &MasterKey, digest: &str) -> Result<(Sealer, Vec<u8>), RegistryError> {
        let (wrapped, sealer, header) = Sealer::new(master, digest)?;
        let create = object_store::PutOptions::from(object_store::PutMode::Create);
        match self.store.put_opts(&Self::key_file(digest), wrapped.to_bytes().into(), create).await {
            Ok(_) => Ok((sealer, header)),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let existing = self.wrapped_key(digest).await?.ok_or_else(|| {
                    RegistryError::Artifacts(format!("the key file of package {digest} vanished while storing it"))
                })?;
                let owner = self.key_for(&existing).unwrap_or_else(|| Arc::new(master.clone()));
                Sealer::reusing(&owner, digest, &existing)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn hash_stored(&self, digest: &str) -> Result<(String, u64), RegistryError> {
        let (_, mut stream) = self.open(digest).await?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.try_next().await? {
            size += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hex::encode(hasher.finalize()), size))
    }

    /// The package's bytes (decrypted, when it is stored encrypted) as a stream, and its size.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`] when the blob is missing; [`RegistryError::Encryption`] when it is encrypted and
    /// no master key, or not the one it was stored with, is configured. A blob altered in the store fails in the
    /// stream, at the first segment that does not authenticate.
    pub async fn open(
        &self,
        digest: &str,
    ) -> Result<(u64, impl Stream<Item = Result<Bytes, RegistryError>> + Send + use<>), RegistryError> {
        let wrapped = self.wrapped_key(digest).await?;
        let got = self.store.get(&Self::key(digest)).await?;
        let stored = got.meta.size;
        let inner = got.into_stream().map_err(RegistryError::from).boxed();
        let Some(wrapped) = wrapped else {
            return Ok((stored, inner));
        };
        let Some(master) = self.key_for(&wrapped) else {
            return Err(RegistryError::Encryption(format!(
                "package {digest} is encrypted (under master key {}); configure that master key \
                 (master_key_file or FERRY_MASTER_KEY) to read it",
                wrapped.master_key_id
            )));
        };
        let size = plaintext_size(stored).ok_or_else(|| {
            RegistryError::Encryption(format!("package {digest}: the stored blob is too short to be encrypted"))
        })?;
        Ok((size, decrypting(inner, master, digest.to_owned(), wrapped).boxed()))
    }

    /// Re-wraps every data key under `new` (unwrapping with `old`), and encrypts under `new` every package stored
    /// before encryption was on. Packages already encrypted are not rewritten. Safe to run again after an
    /// interruption: keys already under `new` are skipped.
    ///
    /// # Errors
    /// [`RegistryError::Encryption`] when a data key is under a master key that is neither `old` nor `new`; store
    /// errors. Keys re-wrapped before the error stay re-wrapped.
    pub async fn rotate_master(&self, old: Option<&MasterKey>, new: &MasterKey) -> Result<Rotation, RegistryError> {
        let mut report = Rotation::default();
        let mut names = Vec::new();
        let mut listing = self.store.list(Some(&StorePath::from(PREFIX)));
        while let Some(meta) = listing.try_next().await? {
            if let Some(name) = meta.location.filename() {
                names.push(name.to_owned());
            }
        }
        for name in &names {
            let Some(digest) = name.strip_suffix(".ferry") else { continue };
            match self.wrapped_key(digest).await? {
                Some(wrapped) if wrapped.master_key_id == new.id() => {
                    if self.blob_is_sealed(digest).await? {
                        report.already += 1;
                    } else {
                        // An earlier rotation stopped between writing the key file and moving the sealed blob in.
                        self.encrypt_in_place(digest, new).await?;
                        report.encrypted += 1;
                    }
                }
                Some(wrapped) => {
                    let old = old.ok_or_else(|| {
                        RegistryError::Encryption(format!(
                            "package {digest} is under master key {}; give the current master key to re-wrap it",
                            wrapped.master_key_id
                        ))
                    })?;
                    let rewrapped = wrapped.rewrap(digest, old, new)?;
                    self.store.put(&Self::key_file(digest), rewrapped.to_bytes().into()).await?;
                    report.rewrapped += 1;
                }
                None => {
                    self.encrypt_in_place(digest, new).await?;
                    report.encrypted += 1;
                }
            }
        }
        Ok(report)
    }

    /// Whether the stored blob carries ferry's encryption header.
    async fn blob_is_sealed(&self, digest: &str) -> Result<bool, RegistryError> {
        let head = self.store.get_range(&Self::key(digest), 0..HEADER as u64).await;
        match head {
            Ok(bytes) => Ok(Sealer::is_sealed(&bytes)),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Encrypts a plaintext package: written encrypted beside it, checked, then moved over it.
    async fn encrypt_in_place(&self, digest: &str, master: &MasterKey) -> Result<(), RegistryError> {
        // The stored bytes as they are (plaintext by now, whatever a key file beside them says), checked against
        // the digest so that nothing but the package itself is ever sealed.
        let local = self.staging.join(format!("{digest}-{:016x}.partial", rand_u64()));
        let staged = Staged { path: local.clone(), digest: digest.to_owned(), size: 0 };
        let mut stream = self.store.get(&Self::key(digest)).await?.into_stream();
        let mut file = tokio::fs::File::create(&local).await.map_err(io("cannot create", &local))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io("cannot write", &local))?;
        }
        file.sync_all().await.map_err(io("cannot sync", &local))?;
        let found = hex::encode(hasher.finalize());
        if found != digest {
            return Err(RegistryError::Artifacts(format!(
                "package {digest} is stored neither encrypted nor intact (it hashes to {found}); left as it is"
            )));
        }
        let temporary = StorePath::from(format!("{PREFIX}/{digest}.encrypting"));
        match self.wrapped_key(digest).await? {
            // A rerun after an interruption: the key file is already there, under this master key.
            Some(existing) if existing.master_key_id == master.id() => {
                let sealer = Sealer::reusing(master, digest, &existing)?;
                self.upload(&staged.path, &temporary, Some(sealer)).await?;
            }
            _ => {
                let (wrapped, sealer, header) = Sealer::new(master, digest)?;
                self.upload(&staged.path, &temporary, Some((sealer, header))).await?;
                self.store.put(&Self::key_file(digest), wrapped.to_bytes().into()).await?;
            }
        }
        self.store.rename(&temporary, &Self::key(digest)).await?;
        let with_key = Self { master: Some(Arc::new(master.clone())), ..self.clone() };
        let (got, _) = with_key.hash_stored(digest).await?;
        if got != digest {
            return Err(RegistryError::Artifacts(format!("package {digest} reads back as {got} after encryption")));
        }
        Ok(())
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
        for key in [Self::key(digest), Self::key_file(digest)] {
            match self.store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
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

    /// Removes key files whose package is gone and half-written `.encrypting` copies, both older than `grace` (what
    /// a store or a rotation that failed midway leaves); returns how many.
    ///
    /// # Errors
    /// Store errors.
    pub async fn clean_orphan_keys(&self, grace: Duration) -> Result<usize, RegistryError> {
        let now = SystemTime::now();
        let (mut blobs, mut candidates) = (std::collections::HashSet::new(), Vec::new());
        let mut listing = self.store.list(Some(&StorePath::from(PREFIX)));
        while let Some(meta) = listing.try_next().await? {
            let Some(name) = meta.location.filename() else { continue };
            let old = now.duration_since(SystemTime::from(meta.last_modified)).unwrap_or_default() >= grace;
            if let Some(digest) = name.strip_suffix(".ferry") {
                blobs.insert(digest.to_owned());
            } else if old && (name.ends_with(".key") || name.ends_with(".encrypting")) {
                candidates.push((name.to_owned(), meta.location.clone()));
            }
        }
        let mut removed = 0;
        for (name, location) in candidates {
            let orphan = match name.strip_suffix(".key") {
                Some(digest) => !blobs.contains(digest),
                None => true,
            };
            if orphan {
                match self.store.delete(&location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
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

/// The plaintext size of an encrypted blob of `stored` bytes: the header, then segments of `SEGMENT + TAG` bytes,
/// the last one shorter (at least a tag).
fn plaintext_size(stored: u64) -> Option<u64> {
    let body = stored.checked_sub(HEADER as u64)?;
    let sealed = (SEGMENT + TAG) as u64;
    let segments = body.div_ceil(sealed).max(1);
    body.checked_sub(segments * TAG as u64)
}

/// Decrypts a stored blob as it streams: a segment is opened as "not last" only once bytes after it have arrived.
fn decrypting(
    inner: futures::stream::BoxStream<'static, Result<Bytes, RegistryError>>,
    master: Arc<MasterKey>,
    digest: String,
    wrapped: WrappedKey,
) -> impl Stream<Item = Result<Bytes, RegistryError>> + Send {
    struct State {
        inner: futures::stream::BoxStream<'static, Result<Bytes, RegistryError>>,
        pending: Vec<u8>,
        opener: Option<Opener>,
        done: bool,
    }
    let sealed = SEGMENT + TAG;
    let state = State { inner, pending: Vec::with_capacity(sealed * 2), opener: None, done: false };
    futures::stream::try_unfold(state, move |mut st| {
        let (master, digest, wrapped) = (master.clone(), digest.clone(), wrapped.clone());
        async move {
            loop {
                if st.done {
                    return Ok(None);
                }
                if st.opener.is_none() && st.pending.len() >= HEADER {
                    st.opener = Some(Opener::new(&master, &digest, &wrapped, &st.pending[..HEADER])?);
                    st.pending.drain(..HEADER);
                }
                if let Some(opener) = st.opener.as_mut()
                    && st.pending.len() > sealed
                {
                    let plain = opener.open_next(&st.pending[..sealed])?;
                    st.pending.drain(..sealed);
                    return Ok(Some((Bytes::from(plain), st)));
                }
                match st.inner.next().await {
                    Some(chunk) => st.pending.extend_from_slice(&chunk?),
                    None => {
                        st.done = true;
                        let Some(opener) = st.opener.as_mut() else {
                            return Err(RegistryError::Encryption(format!(
                                "package {digest}: the stored blob is too short to be encrypted"
                            )));
                        };
                        let plain = opener.open_last(&st.pending)?;
                        return Ok(Some((Bytes::from(plain), st)));
                    }
                }
            }
        }
    })
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
