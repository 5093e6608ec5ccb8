//! Policy evaluation and argument validation cost, per call, against the shipped policy.
//! Run: `cargo bench --bench policy`. Prints medians; compare with the proxy's added latency
//! from `benches/run` (tens of microseconds at least, plus fsyncs).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use airlock::gateway::validate::SchemaCache;
use airlock::policy::{CallFacts, PolicySet, Subject};
use airlock::risk::Risk;
use serde_json::{Value, json};

const ROUNDS: usize = 31;
const PER_ROUND: usize = 20_000;

fn median_ns(mut f: impl FnMut()) -> f64 {
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let start = Instant::now();
        for _ in 0..PER_ROUND {
            f();
        }
        samples.push(start.elapsed().as_nanos() as f64 / PER_ROUND as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[ROUNDS / 2]
}

#[allow(clippy::print_stdout)]
fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policies = PolicySet::load(&root.join("policies")).expect("shipped policies load");
    let groups = vec!["sre".to_owned()];
    let cases: Vec<(&str, Risk, Value)> = vec![
        ("demo__read_customer", Risk::Low, json!({"id": "C-1001"})),
        ("demo__delete_bucket", Risk::Critical, json!({"bucket": "prod-customers"})),
        ("demo__grant_role", Risk::Critical, json!({"user": "bob", "role": "viewer"})),
        ("demo__run_migration", Risk::High, json!({"steps": 250})),
    ];
    println!("| operation | median per call |");
    println!("|---|---|");
    for (tool, risk, args) in &cases {
        let facts = CallFacts { subject: Subject::Tool, tool, risk: *risk, args, principal: "alice", groups: &groups };
        let ns = median_ns(|| {
            std::hint::black_box(policies.decide(std::hint::black_box(&facts)));
        });
        println!("| policy decide, {tool} | {:.2} µs |", ns / 1000.0);
    }
    let schema: Arc<serde_json::Map<String, Value>> = Arc::new(
        json!({"type": "object", "properties": {"user": {"type": "string"}, "role": {"type": "string"}}, "required": ["user", "role"]})
            .as_object()
            .cloned()
            .unwrap_or_default(),
    );
    let cache = SchemaCache::new();
    let args = json!({"user": "bob", "role": "viewer"});
    let ns = median_ns(|| {
        let _ = std::hint::black_box(cache.validate("demo__grant_role", &schema, &args));
    });
    println!("| argument validation (cached validator) | {:.2} µs |", ns / 1000.0);
}
