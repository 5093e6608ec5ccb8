//! Policy rules: matching, precedence, approval merging and defaults (table-driven through
//! the public API), `airlock explain` through the binary, and a property test showing the
//! policy parser never panics.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use airlock::policy::{Approver, CallFacts, Channel, Decision, Effect, PolicySet, Subject};
use airlock::risk::Risk;
use serde_json::{Value, json};

fn policy(text: &str) -> PolicySet {
    match PolicySet::parse(text, Path::new("p.toml")) {
        Ok(set) => set,
        Err(e) => panic!("policy does not parse:\n{e}"),
    }
}

struct Call<'a> {
    tool: &'a str,
    risk: Risk,
    args: Value,
    principal: &'a str,
    groups: &'a [&'a str],
}

fn call(tool: &str, args: Value) -> Call<'_> {
    Call { tool, risk: Risk::High, args, principal: "alice", groups: &[] }
}

fn decide(set: &PolicySet, c: &Call<'_>) -> Decision {
    let groups: Vec<String> = c.groups.iter().map(|g| g.to_string()).collect();
    set.decide(&CallFacts { subject: Subject::Tool, tool: c.tool, risk: c.risk, args: &c.args, principal: c.principal, groups: &groups })
}

/// (case, call, expected effect, expected winning rule)
type Case<'a> = (&'a str, Call<'a>, Effect, Option<&'a str>);

fn run_cases(set: &PolicySet, cases: Vec<Case<'_>>) {
    for (name, c, effect, winner) in cases {
        let d = decide(set, &c);
        assert_eq!(d.effect, effect, "{name}: {}", d.explain());
        assert_eq!(d.winning_rule.as_ref().map(|r| r.as_str()), winner, "{name}: {}", d.explain());
    }
}

const RULES: &str = r#"
[[rule]]
id = "fs-reads"
tools = ["fs__read_*", "fs__list_directory"]
effect = "allow"

[[rule]]
id = "fs-any"
tools = ["fs__*"]
effect = "confirm"

[[rule]]
id = "write-exact"
tools = ["fs__write"]
effect = "approve"

[[rule]]
id = "no-etc"
tools = ["fs__write_file"]
when = { "/path" = { regex = "^/etc/" } }
effect = "deny"
reason = "writes under /etc are never allowed"

[[rule]]
id = "no-path-at-all"
tools = ["fs__touch"]
when = { "/path" = { exists = false } }
effect = "deny"

[[rule]]
id = "big-transfer"
tools = ["bank__transfer"]
when = { "/amount" = { min = 1000 }, "/currency" = { one_of = ["EUR", "USD"] } }
effect = "approve"

[[rule]]
id = "exact-amount"
tools = ["bank__transfer"]
when = { "/amount" = { equals = 7 } }
effect = "deny"

[[rule]]
id = "sre-restart"
tools = ["ops__restart"]
groups = ["sre"]
effect = "allow"

[[rule]]
id = "bob-never"
tools = ["ops__*"]
principals = ["bob"]
effect = "deny"
"#;

#[test]
fn rules_match_by_glob_exact_name_arguments_and_caller() {
    let set = policy(RULES);
    let sre = &["dev", "sre"][..];
    run_cases(
        &set,
        vec![
            ("glob and exact both match; strongest wins", call("fs__read_file", json!({})), Effect::Confirm, Some("fs-any")),
            ("exact name in a list", call("fs__list_directory", json!({})), Effect::Confirm, Some("fs-any")),
            ("glob does not cross into another server", call("fsx__read_file", json!({})), Effect::Approve, None),
            ("an exact name is not a prefix", call("fs__write_file", json!({"path": "/srv/a"})), Effect::Confirm, Some("fs-any")),
            ("exact name matches itself", call("fs__write", json!({})), Effect::Approve, Some("write-exact")),
            ("regex on the argument", call("fs__write_file", json!({"path": "/etc/passwd"})), Effect::Deny, Some("no-etc")),
            ("missing argument does not match", call("fs__write_file", json!({})), Effect::Confirm, Some("fs-any")),
            ("exists = false matches a missing argument", call("fs__touch", json!({})), Effect::Deny, Some("no-path-at-all")),
            ("exists = false, argument present", call("fs__touch", json!({"path": "/x"})), Effect::Confirm, Some("fs-any")),
            ("numeric range and one_of", call("bank__transfer", json!({"amount": 5000, "currency": "EUR"})), Effect::Approve, Some("big-transfer")),
            ("below the range", call("bank__transfer", json!({"amount": 999.5, "currency": "EUR"})), Effect::Approve, None),
            ("not one of", call("bank__transfer", json!({"amount": 5000, "currency": "GBP"})), Effect::Approve, None),
            ("numbers equal by value", call("bank__transfer", json!({"amount": 7.0})), Effect::Deny, Some("exact-amount")),
            ("group member", Call { groups: sre, ..call("ops__restart", json!({})) }, Effect::Allow, Some("sre-restart")),
            ("not a group member", Call { groups: &["dev"], ..call("ops__restart", json!({})) }, Effect::Approve, None),
            ("principal matcher", Call { principal: "bob", groups: sre, ..call("ops__restart", json!({})) }, Effect::Deny, Some("bob-never")),
        ],
    );
}

#[test]
fn a_rule_that_cannot_be_evaluated_denies_and_says_why() {
    let set = policy(RULES);
    let cases = [
        ("regex on a number", call("fs__write_file", json!({"path": 42})), "regex on \"/path\" needs a string, the call has a number"),
        ("regex on an array", call("fs__write_file", json!({"path": ["/etc/x"]})), "the call has an array"),
        ("min on a string", call("bank__transfer", json!({"amount": "lots", "currency": "EUR"})), "min on \"/amount\" needs a number"),
    ];
    for (name, c, why) in cases {
        let d = decide(&set, &c);
        assert_eq!(d.effect, Effect::Deny, "{name}");
        let explained = d.explain();
        assert!(explained.contains(why), "{name}: {explained}");
        assert!(explained.contains("fails closed"), "{name}: {explained}");
        assert!(d.reason.contains("could not be evaluated"), "{name}: {}", d.reason);
    }
    // An AND that is false anyway does not need the broken predicate.
    let d = decide(&set, &call("bank__transfer", json!({"amount": "lots", "currency": "GBP"})));
    assert_eq!((d.effect, d.winning_rule), (Effect::Approve, None));
}

#[test]
fn with_no_matching_rule_each_risk_gets_its_default() {
    let set = PolicySet::empty();
    for (risk, effect, quorum) in [
        (Risk::Low, Effect::Allow, None),
        (Risk::Medium, Effect::Confirm, Some(1)),
        (Risk::High, Effect::Approve, Some(1)),
        (Risk::Critical, Effect::Approve, Some(2)),
    ] {
        let d = decide(&set, &Call { risk, ..call("x__y", json!({})) });
        assert_eq!(d.effect, effect, "{risk}");
        assert_eq!(d.approval.as_ref().map(|a| a.quorum), quorum, "{risk}");
        assert!(d.matched.is_empty() && d.winning_rule.is_none());
        assert!(d.explain().contains(&format!("the default for {risk} risk")), "{}", d.explain());
    }
}

#[test]
fn approvals_merge_highest_quorum_union_and_shortest_timeout() {
    let set = policy(
        r#"
[[rule]]
id = "a"
risk = ["high"]
effect = "approve"
approvers = ["group:sre"]
channels = ["slack"]
timeout = "30m"

[[rule]]
id = "b"
tools = ["db__*"]
effect = "approve"
approvers = ["user:carol", "group:sre"]
quorum = 3
channels = ["api", "slack"]
timeout = "10m"

[[rule]]
id = "c"
tools = ["db__drop"]
effect = "confirm"
timeout = "1m"
"#,
    );
    let d = decide(&set, &call("db__drop", json!({})));
    assert_eq!(d.effect, Effect::Approve);
    assert_eq!(d.winning_rule.as_ref().map(|r| r.as_str()), Some("a"), "ties go to the first rule");
    assert_eq!(d.matched.len(), 3);
    let a = d.approval.expect("approve carries an approval spec");
    assert_eq!(a.quorum, 3);
    assert_eq!(a.approvers, vec![Approver::Group("sre".into()), Approver::User("carol".into())]);
    assert_eq!(a.channels, vec![Channel::Api, Channel::Slack]);
    assert_eq!(a.timeout, Some(Duration::from_secs(600)), "the confirm rule's timeout is not merged in");
}

#[test]
fn an_approve_rule_without_quorum_keeps_the_critical_default_of_two() {
    let set = policy("[[rule]]\nid = \"r\"\nrisk = [\"high\", \"critical\"]\neffect = \"approve\"\n");
    let high = decide(&set, &call("x__y", json!({})));
    let critical = decide(&set, &Call { risk: Risk::Critical, ..call("x__y", json!({})) });
    assert_eq!(high.approval.map(|a| a.quorum), Some(1));
    assert_eq!(critical.approval.map(|a| a.quorum), Some(2));
}

#[test]
fn an_allow_rule_may_lower_a_default_but_deny_beats_everything() {
    let set = policy(
        "[[rule]]\nid = \"ok\"\ntools = [\"*\"]\neffect = \"allow\"\n\
         [[rule]]\nid = \"no\"\ntools = [\"x__*\"]\nrisk = [\"critical\"]\neffect = \"deny\"\nreason = \"never\"\n",
    );
    let d = decide(&set, &call("x__y", json!({})));
    assert_eq!(d.effect, Effect::Allow);
    let d = decide(&set, &Call { risk: Risk::Critical, ..call("x__y", json!({})) });
    assert_eq!(d.effect, Effect::Deny);
    assert_eq!(d.reason, "rule \"no\" denies this call: never");
}

#[test]
fn policy_file_mistakes_are_reported_each_with_its_line() {
    let text = r#"[[rule]]
id = "a"
effect = "deny"
quorum = 2

[[rule]]
effect = "aprove"

[[rule]]
id = "c"
effect = "approve"
approvers = ["sre"]
channels = ["pager"]
when = { "path" = { regex = "(" } }
tools = []
"#;
    let err = PolicySet::parse(text, Path::new("p.toml")).unwrap_err();
    let got: Vec<String> = err.problems().iter().map(|p| p.to_string()).collect();
    let want = [
        "p.toml:4: rule \"a\": key \"quorum\" only applies to effect = \"approve\"",
        "p.toml:6: rule: needs an \"id\"",
        "p.toml:7: key \"rule[2].effect\": \"aprove\" is not a known value (did you mean \"approve\"?)",
        "p.toml:12: rule \"c\": key \"approvers\": \"sre\" must be \"group:NAME\" or \"user:NAME\"",
        "p.toml:13: key \"rule[3].channels\": \"pager\" is not a known value",
        "p.toml:14: rule \"c\": key \"when\": \"path\" is not a JSON pointer",
        "p.toml:14: rule \"c\": when \"path\": regex \"(\" is not valid: unclosed group",
        "p.toml:15: rule \"c\": key \"tools\" is empty",
    ];
    assert_eq!(got.len(), want.len(), "{got:#?}");
    for (line, want) in got.iter().zip(want) {
        assert!(line.starts_with(want), "{line:?} should start with {want:?}");
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn explain(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_airlock"))
        .arg("explain")
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run airlock");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "explain {args:?}\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[test]
fn explain_names_every_matching_rule_and_the_winner_for_the_shipped_policy() {
    let out = explain(&["demo__delete_bucket", "--args", r#"{"bucket":"prod-customers"}"#, "--as", "alice"]);
    assert!(out.contains("risk: critical"), "{out}");
    assert!(out.contains("never-delete-prod-buckets (policies/default.toml:"), "{out}");
    assert!(out.contains("critical-two-sre"), "{out}");
    assert!(out.contains("decision: deny, by rule \"never-delete-prod-buckets\""), "{out}");

    let out = explain(&["demo__grant_role", "--args", r#"{"user":"bob","role":"viewer"}"#, "--groups", "sre,dev"]);
    assert!(out.contains("decision: approve"), "{out}");
    assert!(out.contains("hold: quorum 2"), "{out}");
    assert!(out.contains("caller: "), "{out}");

    let out = explain(&["demo__read_customer", "--args", r#"{"id":"C-1001"}"#, "--risk", "low"]);
    assert!(out.contains("decision: allow, by rule \"read-only-demo-tools\""), "{out}");
}

mod parser_never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Pieces of plausible policy files, so that generated input often gets deep into the
    /// checker rather than failing at the first byte.
    fn line() -> impl Strategy<Value = String> {
        let keys = prop::sample::select(vec![
            "id", "tools", "risk", "when", "principals", "groups", "effect", "reason", "approvers", "quorum",
            "timeout", "channels", "rule", "\"/a\"",
        ]);
        let values = prop::sample::select(vec![
            "\"x\"", "\"\"", "[]", "[\"a*\", \"[\"]", "[\"critical\"]", "\"approve\"", "\"deny\"", "0", "-1",
            "99999999999999999999", "1.5", "true", "{ \"/p\" = { regex = \"(\" } }", "{ \"/p\" = { min = nan } }",
            "{ \"\" = { equals = 1979-05-27 } }", "\"group:\"", "[\"user:x\"]", "\"0s\"", "{}",
            "{ \"~\" = { exists = 1 } }", "[[1], { a = 2 }]",
        ]);
        prop_oneof![
            (keys, values).prop_map(|(k, v)| format!("{k} = {v}")),
            Just("[[rule]]".to_string()),
            Just("[rule.when]".to_string()),
            ".{0,40}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_text_never_panics_the_policy_parser(text in ".{0,400}") {
            let _ = PolicySet::parse(&text, Path::new("fuzz.toml"));
            let _ = airlock::config::Config::parse(&text, Path::new("fuzz.toml"));
        }

        #[test]
        fn arbitrary_rule_files_never_panic_and_parsed_rules_decide(
            lines in prop::collection::vec(line(), 0..24),
            args in prop::sample::select(vec![json!({}), json!({"a": 1, "p": "/etc"}), json!({"p": [1]}), json!({"": null})]),
        ) {
            let text = lines.join("\n");
            if let Ok(set) = PolicySet::parse(&text, Path::new("fuzz.toml")) {
                for risk in Risk::ALL {
                    let groups = vec!["sre".to_string()];
                    let facts = CallFacts { subject: Subject::Tool, tool: "x__y", risk, args: &args, principal: "p", groups: &groups };
                    let d = set.decide(&facts);
                    prop_assert!(!d.explain().is_empty());
                }
            }
        }
    }
}
