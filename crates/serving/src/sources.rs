//! Where models come from: model files named on the command line, or a Triton-style model repository.

use std::path::{Path, PathBuf};

use ferry_types::{ModelName, ModelSignature, ModelVersion};

use crate::{ModelConfig, ServingError};

/// A model file to load, with its name, version and own settings.
#[derive(Debug, Clone)]
pub struct ModelSource {
    /// Model name.
    pub name: ModelName,
    /// Version.
    pub version: ModelVersion,
    /// The `.onnx` file; with `bytes`, only its name in errors and logs.
    pub path: PathBuf,
    /// The model's bytes when it is held in memory (a registry package, decrypted or not, is never unpacked to
    /// disk); `None` reads `path`.
    pub bytes: Option<std::sync::Arc<[u8]>>,
    /// Settings from the model's `config.toml`, if any.
    pub config: ModelConfig,
    /// The signature a package's manifest declares; loading fails if the model's own differs.
    pub expected_signature: Option<ModelSignature>,
}

impl ModelSource {
    /// Where the engines read the model from.
    #[must_use]
    pub fn model_data(&self) -> ferry_engine::ModelData<'_> {
        match &self.bytes {
            Some(bytes) => ferry_engine::ModelData::Memory { bytes, label: &self.path },
            None => ferry_engine::ModelData::File(&self.path),
        }
    }
}

/// `ferry serve a.onnx b.onnx`: each file under its stem, as version 1.
///
/// # Errors
/// [`ServingError::Load`] for a missing file, a stem that is not a valid model name, or two files with one stem.
pub fn sources_from_files(paths: &[PathBuf]) -> Result<Vec<ModelSource>, ServingError> {
    let mut out: Vec<ModelSource> = Vec::new();
    for path in paths {
        let load_err = |message: String| ServingError::Load { name: String::new(), path: path.clone(), message };
        if !path.is_file() {
            return Err(load_err("no such file".into()));
        }
        let stem =
            path.file_stem().and_then(|s| s.to_str()).ok_or_else(|| load_err("the file name is not UTF-8".into()))?;
        let name = ModelName::new(stem).map_err(|e| load_err(e.to_string()))?;
        if out.iter().any(|s| s.name == name) {
            return Err(load_err(format!("another model file is also named {name:?}")));
        }
        let version = ModelVersion::new(1).map_err(|e| load_err(e.to_string()))?;
        out.push(ModelSource {
            name,
            version,
            path: path.clone(),
            bytes: None,
            config: ModelConfig::default(),
            expected_signature: None,
        });
    }
    Ok(out)
}

/// A Triton-style repository: `DIR/<name>/<version>/model.onnx`, every positive integer version, with an optional
/// `DIR/<name>/config.toml`.
///
/// Folders whose names are not valid model names or versions are refused rather than skipped, so that a typo never
/// silently serves less than intended.
///
/// # Errors
/// [`ServingError::Load`] or [`ServingError::Config`] naming the folder or file.
pub fn sources_from_repository(dir: &Path) -> Result<Vec<ModelSource>, ServingError> {
    let err = |path: &Path, message: String| ServingError::Load { name: String::new(), path: path.to_owned(), message };
    let entries = sorted_dirs(dir).map_err(|e| err(dir, format!("cannot read the model repository: {e}")))?;
    let mut out = Vec::new();
    for model_dir in entries {
        let Some(dir_name) = model_dir.file_name().and_then(|n| n.to_str()) else { continue };
        if dir_name.starts_with('.') {
            continue;
        }
        let name = ModelName::new(dir_name).map_err(|e| err(&model_dir, e.to_string()))?;
        let config_path = model_dir.join("config.toml");
        let config = if config_path.is_file() { ModelConfig::from_file(&config_path)? } else { ModelConfig::default() };
        let mut versions = 0;
        for version_dir in sorted_dirs(&model_dir).map_err(|e| err(&model_dir, e.to_string()))? {
            let Some(v) = version_dir.file_name().and_then(|n| n.to_str()) else { continue };
            let version: ModelVersion = v.parse().map_err(|e: ferry_types::NameError| {
                err(&version_dir, format!("{e}; version folders must be named 1, 2, 3, …"))
            })?;
            let path = version_dir.join("model.onnx");
            if !path.is_file() {
                return Err(err(&version_dir, "has no model.onnx".into()));
            }
            out.push(ModelSource {
                name: name.clone(),
                version,
                path,
                bytes: None,
                config: config.clone(),
                expected_signature: None,
            });
            versions += 1;
        }
        if versions == 0 {
            return Err(err(&model_dir, "has no version folders (expected <name>/1/model.onnx)".into()));
        }
    }
    Ok(out)
}

fn sorted_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir(dir)?.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    Ok(dirs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b"x").expect("write");
    }

    #[test]
    fn a_repository_lists_every_version_with_its_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/1/model.onnx"));
        touch(&dir.path().join("a/3/model.onnx"));
        touch(&dir.path().join("b/2/model.onnx"));
        std::fs::write(dir.path().join("a/config.toml"), "engine = \"tract\"").expect("config");
        let found = sources_from_repository(dir.path()).expect("scan");
        let listed: Vec<_> = found.iter().map(|s| (s.name.to_string(), s.version.get())).collect();
        assert_eq!(listed, vec![("a".into(), 1), ("a".into(), 3), ("b".into(), 2)]);
        assert_eq!(found[0].config.engine, Some(crate::EngineChoice::Tract));
        assert_eq!(found[2].config, ModelConfig::default());
    }

    #[test]
    fn bad_folders_are_named_not_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/latest/model.onnx"));
        let err = sources_from_repository(dir.path()).expect_err("bad version").to_string();
        assert!(err.contains("latest") && err.contains("positive integer"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/1/weights.bin"));
        assert!(sources_from_repository(dir.path()).expect_err("no model").to_string().contains("no model.onnx"));

        let dir = tempfile::tempdir().expect("tempdir");
        touch(&dir.path().join("a/1/model.onnx"));
        std::fs::write(dir.path().join("a/config.toml"), "engin = \"tract\"").expect("config");
        assert!(sources_from_repository(dir.path()).expect_err("typo").to_string().contains("engin"));
    }

    #[test]
    fn files_are_served_under_their_stem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("iris.onnx");
        touch(&a);
        let found = sources_from_files(std::slice::from_ref(&a)).expect("files");
        assert_eq!(found[0].name.as_str(), "iris");
        assert_eq!(found[0].version.get(), 1);
        assert!(sources_from_files(&[a.clone(), a]).is_err());
        assert!(sources_from_files(&[dir.path().join("missing.onnx")]).is_err());
    }
}
