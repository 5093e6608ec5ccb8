//! Sealed `requestState` strings as clients send them back: arbitrary text into
//! `Sealer::open`, and generated claims sealed then opened (must round-trip exactly).
#![no_main]

use std::sync::OnceLock;

use airlock::approval::ApprovalId;
use airlock::approval::seal::{Claims, Purpose, Sealer, is_ours};
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    state: String,
    now_ms: u64,
    confirm: bool,
    caller: String,
    tool: String,
    args_sha256: String,
    expires_ms: u64,
    nonce: String,
    inner: Option<String>,
}

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(Sealer::generate)
}

fuzz_target!(|input: Input| {
    let sealer = sealer();
    if sealer.open(&input.state, input.now_ms).is_ok() {
        assert!(is_ours(&input.state));
    }
    let claims = Claims {
        purpose: if input.confirm { Purpose::Confirm } else { Purpose::Continue },
        approval_id: ApprovalId::generate(),
        caller: input.caller,
        tool: input.tool,
        args_sha256: input.args_sha256,
        expires_ms: input.expires_ms,
        nonce: input.nonce,
        inner: input.inner,
    };
    let state = sealer.seal(&claims);
    match sealer.open(&state, input.now_ms) {
        Ok(opened) => assert_eq!(opened, claims),
        Err(_) => assert!(input.now_ms >= claims.expires_ms, "a fresh state did not open"),
    }
});
