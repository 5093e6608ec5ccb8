//! JSON pointers from config (`[audit] redact`, `when` keys, `groups_claim`): the config
//! checks (`check_json_pointer`, `Redactor::check` for redaction patterns with `*`/`**`),
//! and `Redactor` over a generated document. A plain pointer that names a value must leave
//! that value redacted.
#![no_main]

use airlock::audit::{ArgsKey, REDACTED, Redactor};
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
        let _ = Redactor::check(pointer);
    }
    let Ok(key) = ArgsKey::generate() else { return };
    let Ok(redactor) = Redactor::new(&input.pointers, key.clone()) else { return };
    let _ = redactor.redact(&input.doc.0);
    let _ = redactor.digest(&input.doc.0);
    for pointer in &input.pointers {
        let plain = !pointer.contains('*');
        if plain && Redactor::check(pointer).is_ok() && input.doc.0.pointer(pointer).is_some() {
            let one = Redactor::new(std::slice::from_ref(pointer), key.clone()).expect("a pointer the config accepts");
            let redacted = one.redact(&input.doc.0);
            assert_eq!(redacted.pointer(pointer), Some(&serde_json::Value::from(REDACTED)), "{pointer} not redacted");
        }
    }
});
