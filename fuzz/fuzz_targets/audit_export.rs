//! A log export (`airlock log export`, checked by `airlock log verify --export`) through
//! `verify_export`: header, record lines and checkpoint lines with the same record and
//! checkpoint checks `verify_dir` applies to the database. Trust is anchored on the test
//! vector key so seeds with genuine checkpoints get past the signature.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use airlock::audit::{PublicKey, Trust, verify_export};
use libfuzzer_sys::fuzz_target;

fn path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| std::env::temp_dir().join(format!("airlock-fuzz-export-{}.jsonl", std::process::id())))
}

fuzz_target!(|data: &[u8]| {
    let anchor = PublicKey::parse(airlock_fuzz::VECTOR_PUBLIC_KEY).expect("the vector key");
    std::fs::write(path(), data).expect("a writable temp dir");
    let outcome = verify_export(path(), Trust { anchor }).expect("the export file is readable");
    if let Err(failure) = outcome {
        let _ = failure.to_string();
    }
});
