//! `airlock.toml` text through `Config::parse_partial` (what `airlock serve` and
//! `airlock check` run): every problem must be reported, never a panic.
#![no_main]

use std::path::Path;

use airlock::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (_, errors) = Config::parse_partial(text, Path::new("/fuzz/airlock.toml"));
        for problem in errors.problems() {
            let _ = problem.to_string();
        }
    }
});
