//! What the audit log reads back from its own storage and from proofs it is handed:
//! the writer's state record (`store::State::decode`, must re-encode to a fixed point),
//! stored checkpoints and `checkpoints.log` lines (`Checkpoint::from_slice`, must
//! round-trip), inclusion proofs (`check_proof`), keys and signatures in text form.
#![no_main]

use airlock::audit::{Checkpoint, PublicKey, Signature, check_proof};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(encoded) = airlock::fuzzing::audit_state_roundtrip(data) {
        assert_eq!(airlock::fuzzing::audit_state_roundtrip(&encoded).as_deref(), Some(&encoded[..]));
    }
    if let Some(cp) = Checkpoint::from_slice(data) {
        let again = Checkpoint::from_slice(&cp.to_canonical()).expect("a checkpoint re-parses");
        assert_eq!(again.to_canonical(), cp.to_canonical());
        let _ = cp.signature_is_valid();
    }
    if let Ok(proof) = serde_json::from_slice::<serde_json::Value>(data) {
        let key = PublicKey::parse(airlock_fuzz::VECTOR_PUBLIC_KEY).expect("the vector key");
        let _ = check_proof(&proof, &key);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = PublicKey::parse(text);
        let _ = Signature::parse(text);
    }
});
