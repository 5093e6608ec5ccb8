//! The `Authorization` header as `http::auth` hands it to `Authenticator::authenticate`
//! (static tokens configured). Only the exact token may authenticate, as its principal.
#![no_main]

use std::sync::OnceLock;

use airlock::identity::{Authenticator, IdentityConfig, TokenEntry};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "s3cret-token";

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        let sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, TOKEN.as_bytes()));
        let config = IdentityConfig {
            tokens: vec![TokenEntry { name: "alice".into(), sha256, groups: vec!["sre".into()], holder: Default::default(), person: None }],
            ..IdentityConfig::default()
        };
        Authenticator::new(config).expect("a valid identity config")
    })
}

fuzz_target!(|data: &[u8]| {
    // What `require_caller` does: the header value, if it is text.
    let header = HeaderValue::from_bytes(data).ok();
    let text = header.as_ref().and_then(|v| v.to_str().ok());
    let outcome = futures::executor::block_on(authenticator().authenticate(text));
    if let Ok(caller) = outcome {
        assert_eq!(caller.principal.as_str(), "alice");
        let text = text.expect("authenticated without a header");
        let (_, token) = text.trim().split_once(' ').expect("a scheme and a token");
        assert_eq!(token.trim(), TOKEN, "authenticated with another token");
    }
});
