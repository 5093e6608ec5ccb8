//! Shared pieces of the fuzz targets: structure-aware JSON and the fixed keys the targets
//! check against. Nothing here parses; the targets call Airlock's own parsers.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Result, Unstructured};
use serde_json::{Map, Number, Value};

/// Strings the parsers treat specially, so generated documents hit their branches.
const WORDS: &[&str] = &[
    "jsonrpc", "2.0", "id", "method", "params", "result", "error", "code", "message", "data",
    "initialize", "notifications/initialized", "tools/list", "tools/call", "ping", "name",
    "arguments", "_meta", "progressToken", "resources/read", "prompts/get", "uri",
    "notifications/cancelled", "requestId", "cursor", "elicitation/create", "requestState",
    "iss", "aud", "exp", "nbf", "sub", "groups", "kid", "alg", "RS256", "ES256", "none",
    "crit", "keys", "kty", "RSA", "EC", "crv", "P-256", "use", "sig", "enc", "n", "e", "x",
    "y", "https://idp.example", "airlock", "kind", "checkpoint", "export", "seq", "chain_head",
    "frontier", "root", "size", "time", "origin", "key", "signature", "record", "path",
    "key_rotated", "detail", "old_key", "new_key", "since", "type", "block_actions",
    "view_submission", "actions", "value", "action_id", "user", "trigger_id", "view",
    "callback_id", "private_metadata", "state", "values", "", "~", "/", "*", "\u{202e}",
];

/// A JSON value of bounded depth whose strings and keys lean on [`WORDS`].
#[derive(Debug, Clone)]
pub struct ArbJson(pub Value);

impl<'a> Arbitrary<'a> for ArbJson {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        Ok(ArbJson(value(u, 4)?))
    }
}

/// A string: usually one of [`WORDS`], sometimes anything.
pub fn word(u: &mut Unstructured<'_>) -> Result<String> {
    if u.ratio(3, 4)? { Ok((*u.choose(WORDS)?).to_owned()) } else { String::arbitrary(u) }
}

/// A JSON object of bounded depth.
pub fn object(u: &mut Unstructured<'_>, depth: u32) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for _ in 0..u.int_in_range(0..=6)? {
        map.insert(word(u)?, value(u, depth.saturating_sub(1))?);
    }
    Ok(map)
}

/// A JSON value of at most `depth` levels.
pub fn value(u: &mut Unstructured<'_>, depth: u32) -> Result<Value> {
    let top = if depth == 0 { 5 } else { 7 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::Number(i64::arbitrary(u)?.into()),
        3 => Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 => Value::Number(u64::arbitrary(u)?.into()),
        5 => Value::String(word(u)?),
        6 => Value::Array((0..u.int_in_range(0..=5)?).map(|_| value(u, depth - 1)).collect::<Result<_>>()?),
        _ => Value::Object(object(u, depth)?),
    })
}

/// One tokio runtime per fuzzing process, for the async parsers.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a current-thread runtime")
    })
}

/// The test-vector audit key (tests/vectors/checkpoint.json), so seeds with valid
/// checkpoints get past the signature check.
pub const VECTOR_PUBLIC_KEY: &str = "wwwaV0IgDCBcBxDLOlOsZDOdd/0BzpMtyxz35s9aem0=";

/// Slack's published signing example secret (tests/vectors/slack_signature.json).
pub const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
