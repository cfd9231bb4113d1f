//! Packages written and read back, and every way a damaged package must be refused.

use std::path::{Path, PathBuf};

use ferry_package::{
    ColumnProfiler, FORMAT_VERSION, Framework, Lineage, MODEL_PATH, Manifest, PROFILE_PATH, PackageError, PackageInput,
    Profile, open_manifest, read_small_file, verify, write_package,
};
use ferry_types::{ModelName, ModelSignature};

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/mlp_classifier.onnx")
}

fn manifest() -> Manifest {
    Manifest {
        format_version: FORMAT_VERSION,
        name: ModelName::new("mlp").expect("name"),
        description: "test".into(),
        owner: "team".into(),
        tags: vec!["t".into()],
        metadata: [("k".to_owned(), "v".to_owned())].into(),
        framework: Framework::default(),
        signature: ModelSignature { inputs: vec![], outputs: vec![] },
        created_at: "2026-01-01T00:00:00Z".into(),
        files: vec![],
        lineage: Lineage::default(),
        features: vec![],
        validation: None,
    }
}

fn pack(dir: &Path) -> (PathBuf, String) {
    let mut p = ColumnProfiler::new("f0", 1);
    p.push_f64(1.0);
    let profile = Profile { rows: 1, features: vec![p.finish()], outputs: vec![] };
    let out = dir.join("m.ferry");
    let input = PackageInput { manifest: manifest(), model: &model(), profile: Some(&profile), validation: None };
    let digest = write_package(input, &out, &|_| {}).expect("pack");
    (out, digest)
}

#[test]
fn a_package_round_trips_and_its_digest_is_the_file_hash() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, digest) = pack(dir.path());
    let (sha, size) = ferry_package::sha256_file(&path, &|_| {}).expect("hash");
    assert_eq!(sha, digest);
    let extract = dir.path().join("x");
    std::fs::create_dir(&extract).expect("mkdir");
    let contents = verify(&path, Some(&extract), &|_| {}).expect("verify");
    assert_eq!((contents.digest.as_str(), contents.size), (digest.as_str(), size));
    assert_eq!(contents.manifest.name.as_str(), "mlp");
    assert_eq!(contents.manifest.files.len(), 2);
    assert_eq!(std::fs::read(extract.join(MODEL_PATH)).expect("model"), std::fs::read(model()).expect("orig"));
    let profile: Profile =
        serde_json::from_slice(&read_small_file(&path, PROFILE_PATH, 1 << 20).expect("profile")).expect("json");
    assert_eq!(profile.rows, 1);
    assert_eq!(open_manifest(&path).expect("manifest").owner, "team");
    assert!(!dir.path().join("m.ferry.partial").exists());
}

#[test]
fn a_flipped_byte_in_the_model_names_the_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pack(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // The model's data starts after the manifest's header and padded content; flip a byte well inside it.
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).expect("write");
    match verify(&path, None, &|_| {}) {
        Err(PackageError::Checksum { path, reason }) => {
            assert_eq!(path, MODEL_PATH);
            assert!(reason.contains("SHA-256"), "{reason}");
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
}

#[test]
fn a_truncated_package_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pack(dir.path());
    let bytes = std::fs::read(&path).expect("read");
    for cut in [100, 1024, bytes.len() / 2, bytes.len() - 2048] {
        std::fs::write(&path, &bytes[..cut]).expect("write");
        let err = verify(&path, None, &|_| {}).expect_err("truncated").to_string();
        assert!(err.contains("truncated") || err.contains("not a valid"), "cut {cut}: {err}");
    }
}

#[test]
fn a_tampered_manifest_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pack(dir.path());
    let mut bytes = std::fs::read(&path).expect("read");
    // Rewrite the recorded owner inside the manifest (same length, so the tar layout holds): the manifest is not
    // covered by its own checksums, but the package digest changes, which the registry checks.
    let text = b"\"team\"";
    let at = bytes.windows(text.len()).position(|w| w == text).expect("owner in manifest");
    bytes[at + 1] = b'T';
    std::fs::write(&path, &bytes).expect("write");
    let contents = verify(&path, None, &|_| {}).expect("still self-consistent");
    assert_eq!(contents.manifest.owner, "Team");
    // A manifest that lists a different model checksum is caught on the model.
    let mut bytes = std::fs::read(&path).expect("read");
    let sha = ferry_package::sha256_file(&model(), &|_| {}).expect("hash").0;
    let at = bytes.windows(sha.len()).position(|w| w == sha.as_bytes()).expect("sha in manifest");
    bytes[at] = if bytes[at] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(verify(&path, None, &|_| {}), Err(PackageError::Checksum { .. })));
}

#[test]
fn foreign_files_are_not_packages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.ferry");
    std::fs::write(&path, b"hello, this is not a tar archive at all").expect("write");
    assert!(verify(&path, None, &|_| {}).is_err());
    std::fs::copy(model(), &path).expect("copy");
    assert!(verify(&path, None, &|_| {}).is_err());
}

/// A tar archive whose first entry is a valid manifest, followed by `extra` (a hostile entry).
fn hostile(dir: &Path, extra: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> PathBuf {
    let (good, _) = pack(dir);
    let manifest = serde_json::to_vec(&ferry_package::open_manifest(&good).expect("manifest")).expect("json");
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "manifest.json", &manifest[..]).expect("manifest");
    extra(&mut b);
    let out = dir.join("hostile.ferry");
    std::fs::write(&out, b.into_inner().expect("tar")).expect("write");
    out
}

#[test]
fn links_traversal_and_absolute_paths_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let symlink = hostile(dir.path(), |b| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "model.onnx", "/etc/passwd").expect("link");
    });
    let extract = dir.path().join("out");
    std::fs::create_dir(&extract).expect("mkdir");
    let err = verify(&symlink, Some(&extract), &|_| {}).expect_err("symlink").to_string();
    assert!(err.contains("not a regular file"), "{err}");
    assert_eq!(std::fs::read_dir(&extract).expect("out").count(), 0, "nothing was written");

    for bad in ["../model.onnx", "a/../../x"] {
        let traversal = hostile(dir.path(), |b| {
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_entry_type(tar::EntryType::Regular);
            // `append_data` refuses `..` itself, so write the name into the header directly, as an attacker would.
            h.as_old_mut().name[..bad.len()].copy_from_slice(bad.as_bytes());
            h.set_cksum();
            b.append(&h, &b"abc"[..]).expect("entry");
        });
        let err = verify(&traversal, Some(&extract), &|_| {}).expect_err("traversal").to_string();
        assert!(err.contains("unsafe path"), "{bad}: {err}");
    }
    assert_eq!(std::fs::read_dir(&extract).expect("out").count(), 0, "nothing was written");
}

#[test]
fn a_signed_package_fails_verification_after_any_change_to_any_byte() {
    let dir = tempfile::tempdir().expect("tempdir");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/models/tiny_add.onnx");
    let path = dir.path().join("s.ferry");
    let input = PackageInput { manifest: manifest(), model: &model, profile: None, validation: None };
    write_package(input, &path, &|_| {}).expect("pack");
    assert_eq!(ferry_package::check_signature(&path).expect("unsigned"), None);
    let (secret, public) = ferry_package::generate_keypair().expect("keys");
    let key = ferry_package::parse_secret_key(&secret).expect("key");
    let sig = ferry_package::sign_package(&path, &key).expect("sign");
    assert_eq!(ferry_package::public_key_text(&key.verifying_key()), public);
    assert_eq!(ferry_package::check_signature(&path).expect("valid").map(|s| s.public_key), Some(sig.public_key));
    verify(&path, None, &|_| {}).expect("still a valid package");
    assert!(ferry_package::sign_package(&path, &key).is_err(), "signing twice is refused");

    let original = std::fs::read(&path).expect("read");
    let tampered = dir.path().join("t.ferry");
    for at in 0..original.len() {
        let mut bytes = original.clone();
        bytes[at] ^= 0x01;
        std::fs::write(&tampered, &bytes).expect("write");
        let ok = verify(&tampered, None, &|_| {}).is_ok()
            && ferry_package::check_signature(&tampered).is_ok_and(|s| s.is_some());
        assert!(!ok, "flipping byte {at} of {} went unnoticed", original.len());
    }
}

#[test]
fn mutated_packages_are_refused_without_panicking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, _) = pack(dir.path());
    let original = std::fs::read(&path).expect("read");
    let target = dir.path().join("m.ferry");
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        usize::try_from(state % (n.max(1) as u64)).unwrap_or(0)
    };
    let mut refused = 0;
    for _ in 0..1_500 {
        let mut bytes = original.clone();
        match next(3) {
            0 => {
                let i = next(bytes.len());
                bytes[i] = u8::try_from(next(256)).unwrap_or(0);
            }
            1 => bytes.truncate(next(bytes.len())),
            _ => {
                let i = next(bytes.len());
                let j = (i + next(600)).min(bytes.len());
                bytes.drain(i..j);
            }
        }
        std::fs::write(&target, &bytes).expect("write");
        let extract = tempfile::tempdir().expect("extract");
        if verify(&target, Some(extract.path()), &|_| {}).is_err() {
            refused += 1;
        }
        drop(read_small_file(&target, PROFILE_PATH, 1 << 20));
        drop(ferry_package::check_signature(&target));
    }
    assert!(refused > 1_000, "mutations are caught ({refused} of 1500)");
}
