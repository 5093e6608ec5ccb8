//! Slack's signature headers on `/slack/interactions`: arbitrary `X-Slack-Request-Timestamp`,
//! `X-Slack-Signature` and body against `signature::Verifier`. Anything accepted must be
//! exactly what Slack would have signed, and must not be accepted twice.
#![no_main]

use airlock::approval::outbound::Secret;
use airlock::approval::slack::signature::{Verifier, sign};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    timestamp: Option<String>,
    signature: Option<String>,
    body: Vec<u8>,
    now: i64,
}

fuzz_target!(|input: Input| {
    let secret = Secret::new(airlock_fuzz::SLACK_SECRET);
    let verifier = Verifier::new(&secret);
    let (ts, sig) = (input.timestamp.as_deref(), input.signature.as_deref());
    if verifier.verify(ts, sig, &input.body, input.now).is_ok() {
        let (ts, sig) = (ts.expect("timestamp"), sig.expect("signature"));
        assert_eq!(sig.to_ascii_lowercase(), sign(&secret, ts, &input.body), "accepted a signature Slack did not make");
        assert!(verifier.verify(Some(ts), Some(sig), &input.body, input.now).is_err(), "accepted a replay");
    }
});
