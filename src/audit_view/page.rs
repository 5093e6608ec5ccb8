//! The audit view's HTML, inside the approver page's layout (`approval::web::page_response`).
//!
//! Owns: the markup of the calls list, the filter form and one call's chain.
//! Uses: `text::html`, the one escape every value from the log goes through.
//! Must not: read requests or the log; it renders what it is given. No script.

use std::fmt::Write;

use serde_json::Value;

use crate::report::Verification;
// The one HTML escape, which also writes bidi overrides and controls visibly.
use crate::text::html as esc;

use super::calls::{CallFilter, CallRow, Choices};

/// Calls listed at most; the rest are counted and the filter narrows them.
const MAX_ROWS: usize = 500;

const STYLE: &str = "main{max-width:72rem}table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:.35rem .5rem;border-bottom:1px solid var(--line);vertical-align:top}\
th{color:var(--muted);font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
form.filter{display:grid;grid-template-columns:repeat(auto-fit,minmax(10rem,1fr));gap:.5rem;align-items:end}\
form.filter select,form.filter input{width:100%;font:inherit;padding:.45rem;border-radius:8px;border:1px solid var(--line);\
background:var(--bg);color:var(--text)}form.filter button{min-height:2.4rem;padding:.4rem}\
.banner{font-weight:700}.banner.ok{border-color:var(--ok)}.banner.bad{border-color:var(--bad);color:var(--bad)}\
.links a{margin-right:1rem}";

fn style(nonce: &str) -> String {
    format!("<style nonce=\"{}\">{STYLE}</style>", esc(nonce))
}

/// 403 for someone signed in who is not an auditor: says nothing of the log.
pub(super) fn not_an_auditor() -> String {
    "<h1>Not an auditor</h1><p class=\"note error\">Only the auditors named in <code>[approvals.web] auditors</code> \
     may open the audit view. Ask whoever runs this gateway.</p>"
        .to_owned()
}

/// A page with one message.
pub(super) fn note_page(text: &str) -> String {
    format!("<h1>Audit</h1><p class=\"note error\">{}</p>", esc(text))
}

fn banner(v: &Verification) -> String {
    let (class, head) = match v.status {
        "intact" => ("ok", "Log verified: intact"),
        "failed" => ("bad", "LOG VERIFICATION FAILED: the log was altered or damaged"),
        _ => ("bad", "LOG COULD NOT BE VERIFIED"),
    };
    let mut out = format!(
        "<section class=\"card note banner {class}\" id=\"verification\" data-status=\"{status}\">{head}\
         <div class=\"muted\">{summary}</div><div class=\"muted\">Checked against this gateway's signing key as it runs; \
         to check against a key you hold: <code>{reverify}</code></div>",
        status = esc(v.status),
        summary = esc(&v.summary),
        reverify = esc(&v.reverify),
    );
    for w in &v.warnings {
        let _ = write!(out, "<div class=\"muted\">Warning: {}</div>", esc(w));
    }
    out.push_str("</section>");
    out
}

fn select(name: &str, label: &str, options: &std::collections::BTreeSet<String>, chosen: Option<&str>) -> String {
    let mut out = format!("<label>{label}<select name=\"{name}\"><option value=\"\">any</option>");
    for o in options {
        let selected = if chosen == Some(o.as_str()) { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{v}\"{selected}>{v}</option>", v = esc(o));
    }
    out.push_str("</select></label>");
    out
}

fn query(filter: &CallFilter) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("from", &filter.from), ("to", &filter.to)] {
        if let Some(v) = v {
            q.append_pair(k, v);
        }
    }
    q.finish()
}

/// The calls list with the verification on top, the filter, and the report links.
pub(super) fn overview(nonce: &str, v: &Verification, filter: &CallFilter, choices: &Choices, rows: &[&CallRow]) -> String {
    let mut h = style(nonce);
    h.push_str("<h1>Audit log</h1>");
    h.push_str(&banner(v));
    let _ = write!(
        h,
        "<form class=\"card filter\" method=\"get\" action=\"/audit\">\
         <label>From<input type=\"date\" name=\"from\" value=\"{from}\"></label>\
         <label>To<input type=\"date\" name=\"to\" value=\"{to}\"></label>{tool}{principal}{decision}\
         <button class=\"primary\" type=\"submit\">Filter</button></form>",
        from = esc(filter.from.as_deref().unwrap_or_default()),
        to = esc(filter.to.as_deref().unwrap_or_default()),
        tool = select("tool", "Tool", &choices.tools, filter.tool.as_deref()),
        principal = select("principal", "Caller", &choices.principals, filter.principal.as_deref()),
        decision = select("decision", "Decision", &choices.decisions, filter.decision.as_deref()),
    );
    let q = query(filter);
    let _ = write!(
        h,
        "<p class=\"links\">Report for this period: <a href=\"/audit/report?{q}\" id=\"report-html\">HTML</a>\
         <a href=\"/audit/report?{q}{amp}format=json\" id=\"report-json\">JSON</a> \
         <span class=\"muted\">(the same document as <code>airlock report</code>; print the HTML for a PDF)</span></p>",
        q = esc(&q),
        amp = if q.is_empty() { "" } else { "&amp;" },
    );
    let _ = write!(h, "<p class=\"muted\" id=\"count\">{} calls match, newest first.</p>", rows.len());
    if rows.is_empty() {
        h.push_str("<p class=\"card muted\">No call matches.</p>");
        return h;
    }
    h.push_str("<div class=\"card\"><table id=\"calls\"><tr><th>time (UTC)</th><th>tool</th><th>caller</th><th>decision</th><th>risk</th><th>outcome</th></tr>");
    for r in rows.iter().take(MAX_ROWS) {
        let _ = write!(
            h,
            "<tr class=\"call\" data-call=\"{id}\"><td><a href=\"/audit/calls/{id_url}\">{time}</a><div class=\"muted\"><code>{id}</code></div></td>\
             <td><code>{tool}</code></td><td>{principal}</td><td>{decision}</td><td>{risk}</td><td>{outcome}</td></tr>",
            id = esc(&r.call_id),
            id_url = esc(&url::form_urlencoded::byte_serialize(r.call_id.as_bytes()).collect::<String>()),
            time = esc(r.time.get(..19).unwrap_or(&r.time)),
            tool = esc(&r.tool),
            principal = esc(&r.principal),
            decision = esc(&r.decision),
            risk = esc(&r.risk),
            outcome = esc(&r.outcome),
        );
    }
    h.push_str("</table></div>");
    if rows.len() > MAX_ROWS {
        let _ = write!(h, "<p class=\"muted\">{} more not shown: narrow the filter.</p>", rows.len() - MAX_ROWS);
    }
    h
}

/// Who acted in a record: the approver of a vote, else the principal.
fn actor(r: &Value) -> &str {
    r["approver"].as_str().or_else(|| r["principal"].as_str()).unwrap_or_default()
}

/// What a record says, in a few words.
fn what(r: &Value) -> String {
    let parts: Vec<String> = [("decision", ""), ("risk", "risk "), ("channel", "via "), ("rule", "rule "), ("reason", ""), ("comment", "“")]
        .iter()
        .filter_map(|(key, prefix)| {
            r[*key].as_str().filter(|v| !v.is_empty()).map(|v| if *prefix == "“" { format!("“{v}”") } else { format!("{prefix}{v}") })
        })
        .collect();
    parts.join(" · ")
}

/// One call's records in order, each with the checkpoint that covers it and its proof.
pub(super) fn chain(nonce: &str, id: &str, chain: &[&Value], checkpoints: &[u64], v: &Verification) -> String {
    let mut h = style(nonce);
    let tool = chain.iter().find_map(|r| r["tool"].as_str()).unwrap_or_default();
    let _ = write!(h, "<h1>Call <code>{}</code></h1><p><code>{}</code></p>", esc(id), esc(tool));
    h.push_str(&banner(v));
    h.push_str(
        "<div class=\"card\"><table id=\"chain\"><tr><th>seq</th><th>time (UTC)</th><th>record</th><th>by</th><th>what</th>\
         <th>inclusion proof</th></tr>",
    );
    for r in chain {
        let seq = r["seq"].as_u64().unwrap_or(0);
        // The first checkpoint whose tree holds this record signs its inclusion.
        let proof = match checkpoints.iter().position(|size| *size >= seq) {
            Some(index) => format!(
                "<a href=\"/audit/proof/{seq}\">proof</a> <span class=\"muted\">checkpoint #{index} (size {}) · <code>airlock log prove {seq}</code></span>",
                checkpoints[index]
            ),
            None => "<span class=\"muted\">not yet covered by a checkpoint</span>".to_owned(),
        };
        let time = r["time"].as_str().unwrap_or_default();
        let _ = write!(
            h,
            "<tr class=\"record\" data-seq=\"{seq}\" data-kind=\"{kind}\"><td class=\"n\">{seq}</td><td>{time}</td><td><code>{kind}</code></td>\
             <td>{by}</td><td>{what}</td><td>{proof}</td></tr>",
            kind = esc(r["kind"].as_str().unwrap_or_default()),
            time = esc(time.get(..19).unwrap_or(time)),
            by = esc(actor(r)),
            what = esc(&what(r)),
        );
    }
    h.push_str("</table></div><p><a href=\"/audit\">Back to the audit log</a></p>");
    h
}
