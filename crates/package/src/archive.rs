//! Writing and reading the archive: a plain tar file whose first entry is `manifest.json`.
//!
//! Writing goes to `OUT.partial` and is renamed into place only when complete, so an interrupted `ferry pack` never
//! leaves a file that looks like a package. Reading hashes every entry as it streams past and compares it with the
//! manifest, and hashes the whole file to give the package digest the registry stores it under.

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{FileEntry, Manifest, PackageError, Profile, parse_manifest};

/// The manifest's path in the archive.
pub const MANIFEST_PATH: &str = "manifest.json";
/// The ONNX model's path in the archive.
pub const MODEL_PATH: &str = "model.onnx";
/// The reference profile's path in the archive.
pub const PROFILE_PATH: &str = "profile.json";
/// The validation set's path in the archive.
pub const VALIDATION_PATH: &str = "validation.csv";
/// Every path a version-1 package may hold besides the manifest; nothing else is ever read or extracted.
const KNOWN_PATHS: [&str; 3] = [MODEL_PATH, PROFILE_PATH, VALIDATION_PATH];
/// A manifest larger than this is not a manifest.
const MAX_MANIFEST_BYTES: u64 = 4 * 1024 * 1024;
const CHUNK: usize = 256 * 1024;

/// What goes into a new package.
#[derive(Debug)]
pub struct PackageInput<'a> {
    /// The manifest; `files` is filled in by [`write_package`].
    pub manifest: Manifest,
    /// The ONNX file.
    pub model: &'a Path,
    /// The reference profile.
    pub profile: Option<&'a Profile>,
    /// The validation CSV.
    pub validation: Option<&'a Path>,
}

/// A verified package.
#[derive(Debug, Clone)]
pub struct PackageContents {
    /// Its manifest.
    pub manifest: Manifest,
    /// SHA-256 of the whole archive: the package's identity in the registry.
    pub digest: String,
    /// Size of the archive in bytes.
    pub size: u64,
}

/// Writes the package to `out` and returns its digest; `progress` hears the bytes processed so far.
///
/// # Errors
/// I/O errors naming the file; nothing is left at `out` on failure.
pub fn write_package(input: PackageInput<'_>, out: &Path, progress: &dyn Fn(u64)) -> Result<String, PackageError> {
    let PackageInput { mut manifest, model, profile, validation } = input;
    let profile_bytes = profile
        .map(|p| serde_json::to_vec(p).map_err(|e| PackageError::Manifest(format!("profile: {e}"))))
        .transpose()?;
    // First pass: checksums (the manifest comes first in the archive, so it needs them before any file is copied).
    let mut done = 0u64;
    let counted = |n: u64| progress(n);
    manifest.files.clear();
    let (sha, size) = sha256_file(model, &|n| counted(n))?;
    done += size;
    manifest.files.push(FileEntry { path: MODEL_PATH.into(), sha256: sha, size });
    if let Some(bytes) = &profile_bytes {
        manifest.files.push(FileEntry {
            path: PROFILE_PATH.into(),
            sha256: hex_sha256(bytes),
            size: bytes.len() as u64,
        });
    }
    if let Some(path) = validation {
        let (sha, size) = sha256_file(path, &|n| counted(done + n))?;
        done += size;
        manifest.files.push(FileEntry { path: VALIDATION_PATH.into(), sha256: sha, size });
    }
    let manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| PackageError::Manifest(format!("cannot encode: {e}")))?;

    let partial = partial_path(out);
    let result = (|| {
        let file = std::fs::File::create(&partial).map_err(PackageError::io(&partial))?;
        let mut builder = tar::Builder::new(HashingWriter::new(BufWriter::with_capacity(CHUNK, file)));
        let io = PackageError::io(&partial);
        append(&mut builder, MANIFEST_PATH, manifest_bytes.len() as u64, &manifest_bytes[..]).map_err(io)?;
        let f = std::fs::File::open(model).map_err(PackageError::io(model))?;
        let base = done;
        let reader = ProgressReader { inner: f, read: 0, report: &|n| progress(base + n) };
        append(&mut builder, MODEL_PATH, manifest.files[0].size, reader).map_err(PackageError::io(model))?;
        if let Some(bytes) = &profile_bytes {
            append(&mut builder, PROFILE_PATH, bytes.len() as u64, &bytes[..]).map_err(PackageError::io(&partial))?;
        }
        if let Some(path) = validation {
            let entry = manifest.file(VALIDATION_PATH).map_or(0, |f| f.size);
            let f = std::fs::File::open(path).map_err(PackageError::io(path))?;
            append(&mut builder, VALIDATION_PATH, entry, f).map_err(PackageError::io(path))?;
        }
        let writer = builder.into_inner().map_err(PackageError::io(&partial))?;
        let (mut inner, digest) = writer.finish();
        inner.flush().map_err(PackageError::io(&partial))?;
        inner
            .into_inner()
            .map_err(|e| PackageError::io(&partial)(e.into_error()))?
            .sync_all()
            .map_err(PackageError::io(&partial))?;
        std::fs::rename(&partial, out).map_err(PackageError::io(out))?;
        Ok(digest)
    })();
    if result.is_err() {
        drop(std::fs::remove_file(&partial));
    }
    result
}

fn append<W: Write>(builder: &mut tar::Builder<W>, path: &str, size: u64, data: impl Read) -> std::io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(size);
    header.set_mode(0o644);
    // A fixed mtime keeps archives reproducible; the manifest records when the package was made.
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, path, data)
}

fn partial_path(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// SHA-256 (hex) and size of a file, streamed; `progress` hears the bytes read so far.
///
/// # Errors
/// The I/O error, naming the file.
pub fn sha256_file(path: &Path, progress: &dyn Fn(u64)) -> Result<(String, u64), PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let mut reader = ProgressReader { inner: file, read: 0, report: progress };
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buf).map_err(PackageError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok((hex::encode(hasher.finalize()), reader.read))
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Reads only the manifest (the first entry), without checking the other files.
///
/// # Errors
/// [`PackageError::Malformed`] when the file is not a package, or the manifest's own errors.
pub fn open_manifest(path: &Path) -> Result<Manifest, PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut entries = archive.entries().map_err(malformed)?;
    let first = entries.next().ok_or_else(|| PackageError::Malformed("the archive is empty".into()))?;
    read_manifest_entry(first.map_err(malformed)?)
}

/// Verifies every file against the manifest, optionally extracting them into `extract_to` (an existing directory),
/// and returns the manifest and the package digest. `progress` hears the bytes read so far.
///
/// # Errors
/// [`PackageError::Malformed`] for a truncated or foreign archive, [`PackageError::Checksum`] naming the file whose
/// content or size differs, [`PackageError::Manifest`] for a missing, unlisted or duplicated file.
pub fn verify(path: &Path, extract_to: Option<&Path>, progress: &dyn Fn(u64)) -> Result<PackageContents, PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    verify_from(file, extract_to, progress)
}

/// [`verify`] on a package read from any reader (one held in memory, say).
///
/// # Errors
/// As [`verify`].
pub fn verify_from(
    package: impl Read,
    extract_to: Option<&Path>,
    progress: &dyn Fn(u64),
) -> Result<PackageContents, PackageError> {
    let hashing =
        HashingReader { inner: ProgressReader { inner: package, read: 0, report: progress }, hasher: Sha256::new() };
    let mut archive = tar::Archive::new(BufReader::with_capacity(CHUNK, hashing));
    let mut entries = archive.entries().map_err(malformed)?;
    let first = entries.next().ok_or_else(|| PackageError::Malformed("the archive is empty".into()))?;
    let manifest = read_manifest_entry(first.map_err(malformed)?)?;
    check_manifest_paths(&manifest)?;
    let mut seen: Vec<String> = Vec::new();
    for entry in entries.by_ref() {
        let mut entry = entry.map_err(malformed)?;
        let name = entry_path(&entry)?;
        if name == crate::SIGNATURE_PATH {
            // Checked by `check_signature`; it is not part of the manifest's file list.
            continue;
        }
        let Some(expected) = manifest.file(&name) else {
            return Err(PackageError::Manifest(format!(
                "the archive holds {name:?}, which the manifest does not list"
            )));
        };
        if seen.contains(&name) {
            return Err(PackageError::Manifest(format!("the archive holds {name:?} twice")));
        }
        let mut out = match extract_to {
            Some(dir) => {
                let target = dir.join(&name);
                Some(BufWriter::new(std::fs::File::create(&target).map_err(PackageError::io(&target))?))
            }
            None => None,
        };
        let declared = entry.size();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; CHUNK];
        let mut got = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(|e| truncated(&name, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            got += n as u64;
            if let Some(out) = &mut out {
                out.write_all(&buf[..n]).map_err(PackageError::io(dir_join(extract_to, &name)))?;
            }
        }
        if let Some(mut out) = out {
            out.flush().map_err(PackageError::io(dir_join(extract_to, &name)))?;
        }
        if got < declared {
            return Err(cut_short(&name));
        }
        if got != expected.size {
            return Err(PackageError::Checksum {
                path: name,
                reason: format!("size {got} bytes, the manifest says {}", expected.size),
            });
        }
        let sha = hex::encode(hasher.finalize());
        if sha != expected.sha256 {
            return Err(PackageError::Checksum {
                path: name,
                reason: format!("SHA-256 {sha}, the manifest says {}", expected.sha256),
            });
        }
        seen.push(name);
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(PackageError::Malformed(format!(
            "{} is listed in the manifest but missing from the archive (truncated?)",
            missing.path
        )));
    }
    // Hash whatever follows the last entry too (the end-of-archive blocks), so the digest covers the whole file.
    let mut rest = archive.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink()).map_err(PackageError::io(Path::new("the package")))?;
    let hashing = rest.into_inner();
    let size = hashing.inner.read;
    let digest = hex::encode(hashing.hasher.finalize());
    Ok(PackageContents { manifest, digest, size })
}

/// Reads one file of the package into memory (the profile, say), checking its checksum.
///
/// # Errors
/// As [`verify`]; [`PackageError::Manifest`] when the package has no such file or it is larger than `limit`.
pub fn read_small_file(path: &Path, name: &str, limit: u64) -> Result<Vec<u8>, PackageError> {
    let file = std::fs::File::open(path).map_err(PackageError::io(path))?;
    read_file_from(BufReader::new(file), name, limit)
}

/// [`read_small_file`] from a package that is not a file (one held in memory, say).
///
/// # Errors
/// As [`read_small_file`].
pub fn read_file_from(package: impl Read, name: &str, limit: u64) -> Result<Vec<u8>, PackageError> {
    let mut archive = tar::Archive::new(package);
    let mut entries = archive.entries().map_err(malformed)?;
    let first = entries.next().ok_or_else(|| PackageError::Malformed("the archive is empty".into()))?;
    let manifest = read_manifest_entry(first.map_err(malformed)?)?;
    let expected = manifest.file(name).ok_or_else(|| PackageError::Manifest(format!("the package has no {name}")))?;
    if expected.size > limit {
        return Err(PackageError::Manifest(format!("{name} is {} bytes, over the {limit}-byte limit", expected.size)));
    }
    for entry in entries {
        let mut entry = entry.map_err(malformed)?;
        if entry_path(&entry)? != name {
            continue;
        }
        let mut bytes = Vec::new();
        entry.by_ref().take(limit.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| truncated(name, e))?;
        if bytes.len() as u64 != expected.size || hex_sha256(&bytes) != expected.sha256 {
            return Err(PackageError::Checksum {
                path: name.into(),
                reason: "content differs from the manifest".into(),
            });
        }
        return Ok(bytes);
    }
    Err(PackageError::Malformed(format!("{name} is listed in the manifest but missing from the archive")))
}

fn dir_join(dir: Option<&Path>, name: &str) -> PathBuf {
    dir.map(|d| d.join(name)).unwrap_or_default()
}

fn read_manifest_entry<R: Read>(mut entry: tar::Entry<'_, R>) -> Result<Manifest, PackageError> {
    let name = entry_path(&entry)?;
    if name != MANIFEST_PATH {
        return Err(PackageError::Malformed(format!("the first entry is {name:?}, not {MANIFEST_PATH}")));
    }
    if entry.size() > MAX_MANIFEST_BYTES {
        return Err(PackageError::Malformed(format!(
            "the manifest is {} bytes, more than a manifest can be",
            entry.size()
        )));
    }
    let mut bytes = Vec::new();
    entry.read_to_end(&mut bytes).map_err(|e| truncated(MANIFEST_PATH, e))?;
    if bytes.len() as u64 != entry.size() {
        return Err(cut_short(MANIFEST_PATH));
    }
    let manifest = parse_manifest(&bytes)?;
    check_manifest_paths(&manifest)?;
    Ok(manifest)
}

fn check_manifest_paths(manifest: &Manifest) -> Result<(), PackageError> {
    for f in &manifest.files {
        if !KNOWN_PATHS.contains(&f.path.as_str()) {
            return Err(PackageError::Manifest(format!("unknown file {:?} in the manifest", f.path)));
        }
        if f.sha256.len() != 64 || !f.sha256.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) {
            return Err(PackageError::Manifest(format!("{}: sha256 must be 64 lowercase hex digits", f.path)));
        }
    }
    if manifest.file(MODEL_PATH).is_none() {
        return Err(PackageError::Manifest(format!("the manifest lists no {MODEL_PATH}")));
    }
    Ok(())
}

/// The entry's name, refusing anything but a plain file with a plain name: links, directories, devices, absolute
/// paths and `..` never get as far as being matched against the manifest, let alone written.
fn entry_path<R: Read>(entry: &tar::Entry<'_, R>) -> Result<String, PackageError> {
    let raw = entry.path_bytes();
    let name = std::str::from_utf8(&raw)
        .map_err(|_| PackageError::Malformed(format!("entry name {:?} is not UTF-8", String::from_utf8_lossy(&raw))))?
        .to_owned();
    if name.starts_with('/') || name.split(['/', '\\']).any(|part| part == "..") || name.contains('\0') {
        return Err(PackageError::Malformed(format!("entry {name:?} has an unsafe path (absolute or with ..)")));
    }
    let kind = entry.header().entry_type();
    if kind != tar::EntryType::Regular {
        return Err(PackageError::Malformed(format!(
            "entry {name:?} is a {kind:?}, not a regular file (links and directories are refused)"
        )));
    }
    Ok(name)
}

fn malformed(e: std::io::Error) -> PackageError {
    PackageError::Malformed(e.to_string())
}

fn cut_short(name: &str) -> PackageError {
    PackageError::Malformed(format!("{name} is cut short: the archive is truncated"))
}

fn truncated(name: &str, e: std::io::Error) -> PackageError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        cut_short(name)
    } else {
        PackageError::Malformed(format!("{name}: {e}"))
    }
}

struct ProgressReader<'a, R> {
    inner: R,
    read: u64,
    report: &'a dyn Fn(u64),
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        (self.report)(self.read);
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, hasher: Sha256::new() }
    }

    fn finish(self) -> (W, String) {
        (self.inner, hex::encode(self.hasher.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}
