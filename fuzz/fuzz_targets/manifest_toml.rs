//! Tool manifests (`tool-manifests/*.toml`) through `manifest::parse`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match airlock::manifest::parse(text, Path::new("/fuzz/m/demo.toml"), Path::new("/fuzz"), "__") {
            Ok(manifest) => {
                let _ = manifest.tool_risk("export_customers");
                let _ = manifest.is_hidden("crash");
            }
            Err(errors) => {
                for problem in errors.problems() {
                    let _ = problem.to_string();
                }
            }
        }
    }
});
