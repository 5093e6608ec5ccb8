//! Structure-aware JSON-RPC on stdin: generated envelopes (requests, notifications,
//! responses, errors, batches, with MCP method names and nested params) serialised one per
//! line into the gateway's `LineTransport::receive`. Plain bytes rarely get past the
//! JSON parser into rmcp's message types; these do.
#![no_main]

use airlock::gateway::stdio::LineTransport;
use airlock_fuzz::{ArbJson, object, word};
use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use rmcp::RoleServer;
use rmcp::transport::Transport;
use serde_json::{Map, Value};

#[derive(Debug)]
struct Envelope(Value);

impl<'a> Arbitrary<'a> for Envelope {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let mut map = Map::new();
        if u.ratio(7, 8)? {
            let version = if u.ratio(7, 8)? { Value::from("2.0") } else { ArbJson::arbitrary(u)?.0 };
            map.insert("jsonrpc".into(), version);
        }
        match u.int_in_range(0..=3)? {
            0 => {}
            1 => {
                map.insert("id".into(), Value::from(i64::arbitrary(u)?));
            }
            2 => {
                map.insert("id".into(), Value::from(word(u)?));
            }
            _ => {
                map.insert("id".into(), ArbJson::arbitrary(u)?.0);
            }
        }
        match u.int_in_range(0..=3)? {
            0 | 1 => {
                map.insert("method".into(), Value::from(word(u)?));
                if u.ratio(3, 4)? {
                    map.insert("params".into(), Value::Object(object(u, 4)?));
                }
            }
            2 => {
                map.insert("result".into(), Value::Object(object(u, 3)?));
            }
            _ => {
                let mut error = object(u, 2)?;
                error.insert("code".into(), Value::from(i32::arbitrary(u)?));
                error.insert("message".into(), Value::from(word(u)?));
                map.insert("error".into(), Value::Object(error));
            }
        }
        for _ in 0..u.int_in_range(0..=1)? {
            map.insert(word(u)?, ArbJson::arbitrary(u)?.0);
        }
        Ok(Envelope(Value::Object(map)))
    }
}

#[derive(Debug, Arbitrary)]
enum Line {
    One(Envelope),
    Batch(Vec<Envelope>),
    Raw(String),
}

fuzz_target!(|lines: Vec<Line>| {
    let mut input = Vec::new();
    for line in &lines {
        match line {
            Line::One(e) => input.extend(serde_json::to_vec(&e.0).unwrap_or_default()),
            Line::Batch(es) => input
                .extend(serde_json::to_vec(&es.iter().map(|e| e.0.clone()).collect::<Vec<_>>()).unwrap_or_default()),
            Line::Raw(s) => input.extend(s.as_bytes()),
        }
        input.push(b'\n');
    }
    airlock_fuzz::runtime().block_on(async {
        let mut transport = LineTransport::new(std::io::Cursor::new(input), tokio::io::sink(), airlock::config::DEFAULT_MAX_MESSAGE_SIZE);
        while Transport::<RoleServer>::receive(&mut transport).await.is_some() {}
    });
});
