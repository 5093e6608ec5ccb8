//! Structure-aware policies: generated rules (tools globs, risks, principals, groups,
//! `when` predicates with every test kind and generated values, effects, approvers,
//! quorum, timeout, channels) written as TOML, parsed by `PolicySet::parse`, then every
//! generated call decided and explained. Byte mutation rarely yields a well-formed
//! policy; this reaches evaluation with deep argument documents.
#![no_main]

use std::path::Path;

use airlock::policy::{CallFacts, PolicySet, Subject};
use airlock::risk::Risk;
use airlock_fuzz::{ArbJson, word};
use arbitrary::{Arbitrary, Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use toml::Value as Toml;

const TOOLS: &[&str] = &["demo__*", "*", "demo__delete_bucket", "fs__read_*", "**", "[a-", "{a,b}", "?", ""];
const RISKS: &[&str] = &["low", "medium", "high", "critical", "extreme"];
const EFFECTS: &[&str] = &["allow", "deny", "confirm", "approve", "maybe"];
const CHANNELS: &[&str] = &["api", "slack", "teams", "web", "email"];
const POINTERS: &[&str] = &["/bucket", "/role", "/n", "/nested/a/0", "/nested/*", "", "bucket", "/a~2", "/~1"];
const REGEXES: &[&str] = &["^prod-", "(", "a{99999}", ".*", "[[:alpha:]]+", "\\p{L}"];

fn pick(u: &mut Unstructured<'_>, from: &[&str]) -> Result<String> {
    if u.ratio(7, 8)? { Ok((*u.choose(from)?).to_owned()) } else { String::arbitrary(u) }
}

fn strings(u: &mut Unstructured<'_>, from: &[&str]) -> Result<Toml> {
    Ok(Toml::Array((0..u.int_in_range(0..=3)?).map(|_| pick(u, from).map(Toml::String)).collect::<Result<_>>()?))
}

/// A TOML value from JSON (TOML has no null: it becomes a string).
fn toml_of(json: &serde_json::Value) -> Toml {
    match json {
        serde_json::Value::Null => Toml::String("null".into()),
        serde_json::Value::Bool(b) => Toml::Boolean(*b),
        serde_json::Value::Number(n) => n.as_i64().map_or_else(|| Toml::Float(n.as_f64().unwrap_or(0.0)), Toml::Integer),
        serde_json::Value::String(s) => Toml::String(s.clone()),
        serde_json::Value::Array(a) => Toml::Array(a.iter().map(toml_of).collect()),
        serde_json::Value::Object(o) => Toml::Table(o.iter().map(|(k, v)| (k.clone(), toml_of(v))).collect()),
    }
}

fn predicate(u: &mut Unstructured<'_>) -> Result<Toml> {
    let mut table = toml::Table::new();
    for _ in 0..u.int_in_range(0..=2)? {
        match u.int_in_range(0..=6)? {
            0 => table.insert("equals".into(), toml_of(&ArbJson::arbitrary(u)?.0)),
            1 => table.insert(
                "one_of".into(),
                Toml::Array((0..u.int_in_range(0..=3)?).map(|_| ArbJson::arbitrary(u).map(|j| toml_of(&j.0))).collect::<Result<_>>()?),
            ),
            2 => table.insert("regex".into(), Toml::String(pick(u, REGEXES)?)),
            3 => table.insert("min".into(), Toml::Float(f64::arbitrary(u)?)),
            4 => table.insert("max".into(), Toml::Integer(i64::arbitrary(u)?)),
            5 => table.insert("exists".into(), Toml::Boolean(bool::arbitrary(u)?)),
            _ => table.insert(word(u)?, Toml::Integer(1)),
        };
    }
    Ok(Toml::Table(table))
}

fn rule(u: &mut Unstructured<'_>, index: usize) -> Result<Toml> {
    let mut t = toml::Table::new();
    if u.ratio(15, 16)? {
        t.insert("id".into(), Toml::String(if u.ratio(7, 8)? { format!("rule-{index}") } else { word(u)? }));
    }
    if bool::arbitrary(u)? {
        t.insert("tools".into(), strings(u, TOOLS)?);
    }
    if u.ratio(1, 3)? {
        t.insert("risk".into(), strings(u, RISKS)?);
    }
    if u.ratio(1, 4)? {
        t.insert("principals".into(), strings(u, &["alice", "bob", "*", "https://idp.example#alice"])?);
    }
    if u.ratio(1, 4)? {
        t.insert("groups".into(), strings(u, &["sre", "*", "data-protection"])?);
    }
    if bool::arbitrary(u)? {
        let mut when = toml::Table::new();
        for _ in 0..u.int_in_range(1..=3)? {
            when.insert(pick(u, POINTERS)?, predicate(u)?);
        }
        t.insert("when".into(), Toml::Table(when));
    }
    if u.ratio(15, 16)? {
        t.insert("effect".into(), Toml::String(pick(u, EFFECTS)?));
    }
    if u.ratio(1, 3)? {
        t.insert("approvers".into(), strings(u, &["group:sre", "user:bob", "group:", "sre", "user: "])?);
    }
    if u.ratio(1, 4)? {
        t.insert("quorum".into(), Toml::Integer(i64::arbitrary(u)?));
    }
    if u.ratio(1, 4)? {
        t.insert("timeout".into(), Toml::String(pick(u, &["30m", "1h", "0s", "99999999999999h", "x"])?));
    }
    if u.ratio(1, 4)? {
        t.insert("channels".into(), strings(u, CHANNELS)?);
    }
    if u.ratio(1, 2)? {
        t.insert("reason".into(), Toml::String(word(u)?));
    }
    Ok(Toml::Table(t))
}

#[derive(Debug)]
struct Input {
    policy: String,
    calls: Vec<(String, Risk, ArbJson, String, Vec<String>)>,
}

impl<'a> Arbitrary<'a> for Input {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let rules = (0..u.int_in_range(1..=5)?).map(|i| rule(u, i)).collect::<Result<Vec<_>>>()?;
        let mut file = toml::Table::new();
        file.insert("rule".into(), Toml::Array(rules));
        let policy = toml::to_string(&Toml::Table(file)).unwrap_or_default();
        let mut calls = Vec::new();
        for _ in 0..u.int_in_range(1..=3)? {
            let tool = pick(u, &["demo__delete_bucket", "fs__read_file", "demo__grant_role", "a"])?;
            let risk = *u.choose(&[Risk::Low, Risk::Medium, Risk::High, Risk::Critical])?;
            let principal = pick(u, &["alice", "bob"])?;
            let groups = (0..u.int_in_range(0..=2)?).map(|_| pick(u, &["sre", "data-protection"])).collect::<Result<_>>()?;
            calls.push((tool, risk, ArbJson::arbitrary(u)?, principal, groups));
        }
        Ok(Input { policy, calls })
    }
}

fuzz_target!(|input: Input| {
    let Ok(set) = PolicySet::parse(&input.policy, Path::new("/fuzz/policies/p.toml")) else { return };
    for (tool, risk, args, principal, groups) in &input.calls {
        let facts = CallFacts { subject: Subject::Tool, tool, risk: *risk, args: &args.0, principal, groups };
        let _ = set.decide(&facts).explain();
    }
});
