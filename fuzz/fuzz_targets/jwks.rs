//! JWKS documents as an issuer serves them: arbitrary bytes, parsed as JSON (as
//! `oidc::get_json` does) and handed to `jwt::parse_jwks`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = airlock::fuzzing::jwks_kids(&doc);
    }
});
