//! The gateway's side of the control socket (`control::server`): a peer's hello line, then
//! its op request lines, read with the gateway's own bounded line reader and parsed as the
//! gateway parses them; then the parsers the handlers run on request fields (the trusted
//! key of `log_verify`/`report`, the report's period, an approval's state and id).
//! A parsed hello or request must re-serialise to itself (what the client sends is what
//! the gateway reads), and `Request::name` must be its wire tag.
//!
//! Input: first byte even, the rest is the bytes a peer sends; odd, the rest drives
//! `arbitrary` to build a hello and request objects from the protocol's own words.
#![no_main]

use airlock::control::{Hello, Request};
use airlock_fuzz::value;
use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

const OPS: &[&str] = &[
    "status", "stop", "tools_list", "tools_accept", "log_show", "log_tail", "log_verify", "log_export", "log_prove",
    "log_checkpoint", "approvals_list", "approvals_show", "approvals_decide", "keys_rotate", "reload", "report",
];
const FIELDS: &[&str] = &[
    "name", "seq", "lines", "follow", "pubkey", "since", "consistency", "to", "from", "token", "state", "id",
    "decision", "comment", "json", "op",
];
const TEXT: &[&str] = &[
    "approve", "deny", "pending", "approved", "denied", "expired", "cancelled", "2026-01-01", "2026-02-30",
    "9999-12-31", "0000-00-00", "2026-1-1", "wwwaV0IgDCBcBxDLOlOsZDOdd/0BzpMtyxz35s9aem0=", "00", "", " ",
    "demo__echo", "s3cret-token", "/etc/airlock.toml", "op", "mcp",
];

fn field_value(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=4)? {
        0 => Value::from(u.arbitrary::<u64>()?),
        1 => Value::from(u.arbitrary::<bool>()?),
        2 => Value::from(*u.choose(TEXT)?),
        3 => Value::Null,
        _ => value(u, 2)?,
    })
}

fn session(u: &mut Unstructured<'_>) -> Result<Vec<u8>> {
    let mut hello = Map::new();
    hello.insert("airlock".into(), if u.ratio(7, 8)? { Value::from(1) } else { field_value(u)? });
    hello.insert("mode".into(), if u.ratio(7, 8)? { Value::from(*u.choose(&["op", "mcp"])?) } else { field_value(u)? });
    if u.arbitrary()? {
        hello.insert("config".into(), field_value(u)?);
    }
    let mut out = serde_json::to_vec(&Value::Object(hello)).expect("JSON");
    out.push(b'\n');
    for _ in 0..u.int_in_range(0..=6)? {
        let mut request = Map::new();
        request.insert("op".into(), Value::from(*u.choose(OPS)?));
        for _ in 0..u.int_in_range(0..=4)? {
            request.insert((*u.choose(FIELDS)?).to_owned(), field_value(u)?);
        }
        out.extend(serde_json::to_vec(&Value::Object(request)).expect("JSON"));
        out.push(b'\n');
    }
    Ok(out)
}

fn check(bytes: &[u8]) {
    let Some(read) = airlock_fuzz::runtime().block_on(airlock::fuzzing::control_requests(bytes)) else { return };
    if let Ok(hello) = &read.hello {
        let again: Hello = serde_json::from_slice(&serde_json::to_vec(hello).expect("a hello serialises")).expect("a hello re-parses");
        assert_eq!(&again, hello);
    }
    for request in read.requests.iter().flatten() {
        let wire = serde_json::to_value(request).expect("a request serialises");
        assert_eq!(wire["op"], request.name(), "Request::name is the wire tag");
        let again: Request = serde_json::from_value(wire).expect("a request re-parses");
        assert_eq!(&again, request);
        let _ = request.needs_operator();
        match request {
            Request::LogVerify { pubkey: Some(key) } => {
                let _ = airlock::audit::PublicKey::parse(key.trim());
            }
            Request::Report { from, to, pubkey, .. } => {
                if let Some(key) = pubkey {
                    let _ = airlock::audit::PublicKey::parse(key.trim());
                }
                let _ = airlock::report::period_of(&[], from.clone(), to.clone());
            }
            Request::ApprovalsList { state: Some(state), .. } => {
                let _ = airlock::approval::State::parse(state);
            }
            Request::ApprovalsShow { id, .. } | Request::ApprovalsDecide { id, .. } => {
                let _ = airlock::approval::ApprovalId::parse(id);
            }
            _ => {}
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
