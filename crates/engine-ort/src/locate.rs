//! Finding `libonnxruntime` on this machine.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How the library was found, for the start-up log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LibrarySource {
    /// The `--onnxruntime-lib` flag or `onnxruntime_lib` setting.
    Configured,
    /// The `ORT_DYLIB_PATH` environment variable.
    EnvironmentVariable,
    /// The `capi/` folder of the `onnxruntime` Python package.
    PythonPackage,
    /// The system's dynamic loader search path.
    SystemLoader,
}

impl fmt::Display for LibrarySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Configured => "configured onnxruntime_lib",
            Self::EnvironmentVariable => "ORT_DYLIB_PATH",
            Self::PythonPackage => "the onnxruntime Python package",
            Self::SystemLoader => "the system library path",
        })
    }
}

/// A library file and how it was found.
#[derive(Debug, Clone)]
pub struct LocatedLibrary {
    /// The file to load (a bare file name for the system loader).
    pub path: PathBuf,
    /// Where it came from.
    pub source: LibrarySource,
}

/// Finds `libonnxruntime`, in this order: `explicit` (the flag or setting), `ORT_DYLIB_PATH`, the `onnxruntime`
/// Python package's `capi/` folder, then the system loader path.
///
/// # Errors
/// A message listing every place looked, when an explicitly named file does not exist or nothing is found.
pub fn locate_library(explicit: Option<&Path>) -> Result<LocatedLibrary, String> {
    if let Some(p) = explicit {
        return existing(p, LibrarySource::Configured)
            .ok_or_else(|| format!("onnxruntime_lib {} does not exist", p.display()));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return existing(Path::new(&p), LibrarySource::EnvironmentVariable)
            .ok_or_else(|| format!("ORT_DYLIB_PATH={} does not exist", Path::new(&p).display()));
    }
    if let Some(found) = python_package_library() {
        return Ok(found);
    }
    if let Some(found) = system_library() {
        return Ok(found);
    }
    Err("libonnxruntime.so was not found (looked at --onnxruntime-lib, ORT_DYLIB_PATH, the onnxruntime Python \
         package, and the system library path); install it with `python3 -m pip install onnxruntime` or point \
         ORT_DYLIB_PATH at the library"
        .into())
}

fn existing(p: &Path, source: LibrarySource) -> Option<LocatedLibrary> {
    p.is_file().then(|| LocatedLibrary { path: p.to_owned(), source })
}

/// Asks the Python interpreters on `PATH` where the `onnxruntime` package lives and picks the library in `capi/`.
fn python_package_library() -> Option<LocatedLibrary> {
    const PROBE: &str = "import importlib.util as u, os; s = u.find_spec('onnxruntime'); \
                         print(os.path.dirname(s.origin) if s and s.origin else '')";
    ["python3", "python"].into_iter().find_map(|python| {
        let out = Command::new(python).args(["-c", PROBE]).output().ok()?;
        let dir = String::from_utf8(out.stdout).ok()?;
        let capi = Path::new(dir.trim()).join("capi");
        newest_library_in(&capi).map(|path| LocatedLibrary { path, source: LibrarySource::PythonPackage })
    })
}

/// The `libonnxruntime.so*` file in `dir`, preferring the fully versioned name (the real file, not a link).
fn newest_library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("libonnxruntime.so")))
        .collect();
    found.sort_by_key(|p| p.as_os_str().len());
    found.pop()
}

/// A library the system loader would find: the usual library folders, then `LD_LIBRARY_PATH`.
fn system_library() -> Option<LocatedLibrary> {
    let from_env =
        std::env::var_os("LD_LIBRARY_PATH").map(|v| std::env::split_paths(&v).collect::<Vec<_>>()).unwrap_or_default();
    let standard = ["/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib"]
        .map(PathBuf::from);
    from_env
        .into_iter()
        .chain(standard)
        .find_map(|d| newest_library_in(&d))
        .map(|path| LocatedLibrary { path, source: LibrarySource::SystemLoader })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_path_that_does_not_exist_is_an_error_not_a_fallback() {
        let err = locate_library(Some(Path::new("/nonexistent/libonnxruntime.so"))).map(|l| l.path);
        assert_eq!(err, Err("onnxruntime_lib /nonexistent/libonnxruntime.so does not exist".to_string()));
    }

    #[test]
    fn the_versioned_file_is_preferred() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["libonnxruntime.so", "libonnxruntime.so.1.32.0", "other.so"] {
            std::fs::write(dir.path().join(name), b"").expect("write");
        }
        assert_eq!(newest_library_in(dir.path()), Some(dir.path().join("libonnxruntime.so.1.32.0")));
    }
}
