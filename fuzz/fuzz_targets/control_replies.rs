//! The client's side of the control socket (`control::client`): the gateway's hello reply,
//! then the reply lines (`item`, `done`, `error`), read with the client's bounded line reader
//! and parsed as the client parses them; then the `done` values the CLI reads into its types
//! (the status report, a key rotation, tool rows, approvals).
//!
//! Input: first byte even, the rest is the bytes a gateway sends; odd, the rest drives
//! `arbitrary` to build a welcome and reply objects.
#![no_main]

use airlock::control::{HelloReply, Reply, Rotated, StatusReport, ToolRow};
use airlock_fuzz::{object, value};
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

const CODES: &[&str] = &[
    "not_admitted", "not_operator", "config_mismatch", "wrong_version", "bad_request", "failed", "decision_refused",
    "reload_refused", "other",
];

fn session(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let hello = if u.ratio(7, 8)? {
        json!({"ok": {"pid": u.arbitrary::<u32>()?, "version": "0.1.0", "config": value(u, 1)?, "principal": "unix:alice"}})
    } else {
        json!({"refused": {"code": *u.choose(CODES)?, "message": value(u, 1)?}})
    };
    let mut out = serde_json::to_vec(&hello).expect("JSON");
    out.push(b'\n');
    for _ in 0..u.int_in_range(0..=6)? {
        let reply = match u.int_in_range(0..=2)? {
            0 => json!({"item": value(u, 3)?}),
            1 => json!({"done": Value::Object(object(u, 3)?)}),
            _ => json!({"error": {"code": *u.choose(CODES)?, "message": value(u, 1)?}}),
        };
        out.extend(serde_json::to_vec(&reply).expect("JSON"));
        out.push(b'\n');
    }
    Ok(out)
}

fn check(bytes: &[u8]) {
    let read = airlock_fuzz::runtime().block_on(airlock::fuzzing::control_replies(bytes));
    if let Ok(HelloReply::Refused(refusal)) = &read.hello {
        let _ = refusal.to_string();
    }
    for reply in &read.replies {
        match reply {
            Reply::Done(done) => {
                let _ = serde_json::from_value::<StatusReport>(done.clone());
                let _ = serde_json::from_value::<Rotated>(done.clone());
                let _ = serde_json::from_value::<Vec<ToolRow>>(done.clone());
                let _ = serde_json::from_value::<Vec<airlock::approval::Approval>>(done["approvals"].clone());
                let _ = serde_json::from_value::<airlock::approval::Approval>(done["approval"].clone());
            }
            Reply::Error(refusal) => {
                let _ = refusal.to_string();
            }
            Reply::Item(_) => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        check(rest);
    } else if let Ok(bytes) = session(&mut Unstructured::new(rest)) {
        check(&bytes);
    }
});
