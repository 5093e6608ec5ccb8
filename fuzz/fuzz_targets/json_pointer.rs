//! JSON pointers from config (`[audit] redact`, `when` keys, `groups_claim`): the config
//! check `check_json_pointer`, and `Redactor` over a generated document. A pointer that
//! names a value must leave that value redacted.
#![no_main]

use airlock::audit::{REDACTED, Redactor};
use airlock_fuzz::ArbJson;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Input {
    pointers: Vec<String>,
    doc: ArbJson,
}

fuzz_target!(|input: Input| {
    for pointer in &input.pointers {
        let _ = airlock::config::check_json_pointer(pointer);
    }
    let Ok(redactor) = Redactor::new(&input.pointers) else { return };
    let _ = redactor.redact(&input.doc.0);
    for pointer in &input.pointers {
        if airlock::config::check_json_pointer(pointer).is_ok() && input.doc.0.pointer(pointer).is_some() {
            let one = Redactor::new(std::slice::from_ref(pointer)).expect("a pointer the config accepts");
            let redacted = one.redact(&input.doc.0);
            assert_eq!(redacted.pointer(pointer), Some(&serde_json::Value::from(REDACTED)), "{pointer} not redacted");
        }
    }
});
