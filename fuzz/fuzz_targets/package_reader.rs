//! The package reader on arbitrary archives: verifying every file against the manifest, reading one file, and the
//! manifest parser alone. Each must refuse bad input with an error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|archive: &[u8]| {
    drop(ferry_package::verify_from(archive, None, &|_| {}));
    drop(ferry_package::read_file_from(archive, ferry_package::MODEL_PATH, 1 << 20));
    drop(ferry_package::parse_manifest(archive));
});
