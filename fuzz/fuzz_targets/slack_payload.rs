//! A signed Slack interaction body (form-encoded `payload=<json>`), through the handler's
//! own verify-then-parse. The target signs each body with the test secret so the
//! parser behind the signature check is reached; a correctly signed fresh body must never
//! be refused as unauthenticated.
#![no_main]

use std::time::{SystemTime, UNIX_EPOCH};

use airlock::approval::outbound::Secret;
use airlock::approval::slack::Refused;
use airlock::approval::slack::signature::sign;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let secret = Secret::new(airlock_fuzz::SLACK_SECRET);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()).to_string();
    let signature = sign(&secret, &now, body);
    match airlock::fuzzing::slack_interaction(&secret, Some(&now), Some(&signature), body) {
        Ok(_) | Err(Refused::Malformed) => {}
        Err(other) => panic!("a correctly signed body was refused: {other}"),
    }
});
