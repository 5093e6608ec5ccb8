//! Policy files (`policies/*.toml`) as text through `PolicySet::parse`; a set that parses
//! decides a few calls and explains them.
#![no_main]

use std::path::Path;

use airlock::policy::{CallFacts, PolicySet, Subject};
use airlock::risk::Risk;
use libfuzzer_sys::fuzz_target;
use serde_json::json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(set) = PolicySet::parse(text, Path::new("/fuzz/policies/p.toml")) else { return };
    let groups = vec!["sre".to_owned()];
    let args = [json!({}), json!({"bucket": "prod-x", "role": "admin", "n": 3, "nested": {"a": [1, "b"]}})];
    for (tool, risk) in [("demo__delete_bucket", Risk::Critical), ("fs__read_file", Risk::Low)] {
        for args in &args {
            let facts = CallFacts { subject: Subject::Tool, tool, risk, args, principal: "alice", groups: &groups };
            let _ = set.decide(&facts).explain();
        }
    }
});
