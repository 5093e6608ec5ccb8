//! The approver page's HTML: server-rendered, inline CSS, one small script, no assets.
//!
//! Owns: the markup and the one escaping function every value goes through.
//! Uses: `approval` (what an approval holds).
//! Must not: read requests or decide anything; it renders what it is given.
//!
//! Every value that did not come from this file is passed through [`esc`], including
//! ids, names and the (redacted) arguments, which come from an untrusted agent.

use std::fmt::Write;

use crate::approval::{Approval, State, now_ms, rfc3339};

/// HTML-escapes text for element content and quoted attribute values, after writing the
/// characters that would reorder or break what a person reads as `\uXXXX`.
pub(super) fn esc(text: &str) -> String {
    crate::text::html(text)
}

const STYLE: &str = r#"
:root{--bg:#f5f6f8;--card:#fff;--text:#1c2430;--muted:#5c6778;--line:#dde1e7;--accent:#2456d8;
--ok:#1d7a3c;--bad:#b3261e;--warn:#8a5a00;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#14171c;--card:#1d2229;--text:#e8ebf0;--muted:#9aa4b2;
--line:#313843;--accent:#7aa2ff;--ok:#5cc486;--bad:#ff8a80;--warn:#e0b050}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--text);font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
header{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between;
padding:.75rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
header a.brand{font-weight:700;color:var(--text);text-decoration:none}
header .who{color:var(--muted);font-size:.875rem;overflow-wrap:anywhere}
header .who small{font-size:.75rem;font-family:ui-monospace,SFMono-Regular,Menlo,monospace}
header form{display:inline;margin:0}
main{max-width:46rem;margin:0 auto;padding:1rem}
h1{font-size:1.375rem;margin:.25rem 0 1rem;overflow-wrap:anywhere}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:1rem;margin:0 0 1rem}
a.card{display:block;color:inherit;text-decoration:none}a.card:hover{border-color:var(--accent)}
.row{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;justify-content:space-between}
.tool{font-weight:600;font-family:ui-monospace,SFMono-Regular,Menlo,monospace;overflow-wrap:anywhere}
.muted{color:var(--muted);font-size:.875rem;font-weight:400}
.badge{display:inline-block;border-radius:999px;padding:.1rem .6rem;font-size:.8rem;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.risk-low{color:var(--ok)}.risk-medium{color:var(--warn)}.risk-high,.risk-critical{color:var(--bad)}
.risk-critical{background:var(--bad);color:#fff;border-color:var(--bad)}
.state-approved{color:var(--ok)}.state-denied{color:var(--bad)}.state-pending{color:var(--accent)}
.state-expired,.state-cancelled{color:var(--muted)}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.35rem 1rem;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
@media (max-width:420px){dl{gap:.3rem .75rem;font-size:.95rem}}
pre{background:var(--bg);border:1px solid var(--line);border-radius:8px;padding:.75rem;margin:.5rem 0 0;
overflow:auto;max-height:22rem;font:13px/1.45 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;
overflow-wrap:anywhere}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:.85em;overflow-wrap:anywhere}
label{display:block;font-weight:600;margin:0 0 .35rem}
textarea,input[type=password],input[type=text]{width:100%;font:inherit;padding:.65rem;border-radius:8px;
border:1px solid var(--line);background:var(--bg);color:var(--text)}
textarea{min-height:4.5rem;resize:vertical}
.buttons{display:flex;flex-wrap:wrap;gap:.75rem;margin-top:1rem}
button,a.button{flex:1 1 10rem;min-height:3rem;font:inherit;font-weight:700;border-radius:10px;border:0;
cursor:pointer;padding:.75rem 1rem;text-align:center;text-decoration:none;display:inline-block}
.approve{background:var(--ok);color:#fff}.deny{background:var(--bad);color:#fff}
.primary{background:var(--accent);color:#fff}
.link{background:none;border:0;color:var(--accent);font:inherit;font-size:.875rem;cursor:pointer;padding:0;min-height:0;flex:none}
.note{border-left:4px solid var(--accent);padding:.5rem .75rem;background:var(--card);margin:0 0 1rem;border-radius:4px}
.note.error{border-color:var(--bad)}.note.ok{border-color:var(--ok)}
ul.votes{margin:0;padding-left:1.1rem}
hr{border:0;border-top:1px solid var(--line);margin:1rem 0}
"#;

/// Who is signed in, for the header.
pub(crate) struct Header<'a> {
    /// `(display name, principal)`; the principal is shown in small type beside the name.
    pub(crate) who: Option<(&'a str, &'a str)>,
}

/// A whole document.
pub(super) fn layout(title: &str, nonce: &str, header: &Header<'_>, body: &str) -> String {
    let who = match header.who {
        Some((name, principal)) => format!(
            "<span class=\"who\">Signed in as <strong id=\"display-name\">{}</strong>{}</span> \
             <form method=\"post\" action=\"/approvals/sign-out\"><button class=\"link\" type=\"submit\">Sign out</button></form>",
            esc(name),
            if name == principal { String::new() } else { format!(" <small id=\"principal\">{}</small>", esc(principal)) },
        ),
        None => String::new(),
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"same-origin\">\
         <title>{title} · Airlock</title><style nonce=\"{nonce}\">{STYLE}</style></head><body>\
         <header><a class=\"brand\" href=\"/approvals\">Airlock approvals</a><div>{who}</div></header>\
         <main>{body}</main></body></html>\n",
        title = esc(title),
        nonce = esc(nonce),
    )
}

/// A note above the content: `kind` is `error`, `ok` or empty.
pub(super) fn note(kind: &str, text: &str) -> String {
    let class = match kind {
        "error" => "note error",
        "ok" => "note ok",
        _ => "note",
    };
    format!("<p class=\"{class}\" role=\"status\">{}</p>", esc(text))
}

/// The sign-in page.
pub(super) fn sign_in(next: &str, oidc_issuer: Option<&str>, identity_enabled: bool, error: Option<&str>) -> String {
    let mut body = String::from("<h1>Sign in to decide approvals</h1>");
    if let Some(error) = error {
        body.push_str(&note("error", error));
    }
    if !identity_enabled {
        body.push_str(&note(
            "error",
            "No identity is configured ([identity] tokens or oidc in airlock.toml), so nobody can \
             sign in here: an anonymous caller never decides approvals.",
        ));
        return body;
    }
    if let Some(issuer) = oidc_issuer {
        let _ = write!(
            body,
            "<div class=\"card\"><p class=\"muted\">Single sign-on with {issuer}</p><div class=\"buttons\">\
             <a class=\"button primary\" href=\"/approvals/sign-in/oidc?next={next}\">Sign in with your identity provider</a>\
             </div></div>",
            issuer = esc(issuer),
            next = esc(&url_component(next)),
        );
    }
    let _ = write!(
        body,
        "<form class=\"card\" method=\"post\" action=\"/approvals/sign-in\">\
         <label for=\"token\">Bearer token</label>\
         <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\" required>\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\
         <p class=\"muted\">An API token from [[identity.tokens]], or an access token of a configured issuer.</p>\
         <div class=\"buttons\"><button class=\"primary\" type=\"submit\">Sign in with a token</button></div></form>",
        next = esc(next),
    );
    body
}

/// The list of approvals the signed-in person may decide.
pub(super) fn list(approvals: &[Approval]) -> String {
    let mut body = String::from("<h1>Waiting for your decision</h1>");
    if approvals.is_empty() {
        body.push_str("<p class=\"card muted\" id=\"empty\">Nothing is waiting for you.</p>");
        return body;
    }
    for a in approvals {
        let _ = write!(
            body,
            "<a class=\"card approval\" href=\"/approvals/{id}\" data-id=\"{id}\"><div class=\"row\">\
             <span class=\"tool\">{tool}</span>{risk}</div>\
             <div class=\"muted\">by {caller} · {reason}</div>\
             <div class=\"muted\">{votes} · expires {expires}</div></a>",
            id = esc(a.id.as_str()),
            tool = esc(&a.tool),
            risk = risk_badge(&a.risk),
            caller = esc(&a.caller),
            reason = esc(&a.reason),
            votes = esc(&progress(a)),
            expires = expiry(a, now_ms()),
        );
    }
    body
}

/// What the detail page shows besides the approval.
pub(super) struct Detail<'a> {
    /// The CSRF token for the form; `None`: this person cannot decide it (no buttons).
    pub(super) csrf: Option<&'a str>,
    /// Why there are no buttons, or what just happened.
    pub(super) note: Option<(&'a str, &'a str)>,
    /// Nonce of the script that refreshes the page when the approval changes elsewhere.
    pub(super) nonce: &'a str,
}

/// One approval in full, with the decision form.
pub(super) fn detail(a: &Approval, d: &Detail<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<div class=\"row\"><h1 class=\"tool\">{tool}</h1><span class=\"badge state-{state}\" id=\"state\">{state}</span></div>",
        tool = esc(&a.tool),
        state = esc(a.state.as_str()),
    );
    if let Some((kind, text)) = d.note {
        body.push_str(&note(kind, text));
    }
    let rule = a.rule.as_deref().unwrap_or("(default for this risk)");
    let _ = write!(
        body,
        "<section class=\"card\"><dl>\
         <dt>Server</dt><dd>{server}</dd>\
         <dt>Risk</dt><dd>{risk}</dd>\
         <dt>Caller</dt><dd>{caller}</dd>\
         <dt>Rule</dt><dd>{rule}</dd>\
         <dt>Reason</dt><dd>{reason}</dd>\
         <dt>Needs</dt><dd>{needs}</dd>\
         <dt>Expires</dt><dd>{expires}</dd>\
         <dt>Digest</dt><dd><code>hmac-sha256:{digest}</code></dd>\
         <dt>Approval</dt><dd><code>{id}</code></dd>\
         </dl><hr><strong>Arguments</strong> <span class=\"muted\">(configured secrets redacted)</span>\
         <pre id=\"args\">{args}</pre></section>",
        server = esc(&a.server),
        risk = risk_badge(&a.risk),
        caller = esc(&a.caller),
        rule = esc(rule),
        reason = esc(&a.reason),
        needs = esc(&needs(a)),
        expires = expiry(a, now_ms()),
        digest = esc(&a.args_hmac),
        id = esc(a.id.as_str()),
        args = esc(&serde_json::to_string_pretty(&a.args).unwrap_or_default()),
    );
    body.push_str(&votes(a));
    if let (Some(csrf), State::Pending) = (d.csrf, a.state) {
        let _ = write!(
            body,
            "<form class=\"card\" method=\"post\" action=\"/approvals/{id}/decision\" id=\"decide\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{csrf}\">\
             <label for=\"comment\">Comment <span class=\"muted\">(optional, kept in the audit log)</span></label>\
             <textarea id=\"comment\" name=\"comment\" maxlength=\"2000\"></textarea>\
             <div class=\"buttons\">\
             <button class=\"approve\" type=\"submit\" name=\"decision\" value=\"approve\">Approve</button>\
             <button class=\"deny\" type=\"submit\" name=\"decision\" value=\"deny\">Deny</button>\
             </div></form>",
            id = esc(a.id.as_str()),
            csrf = esc(csrf),
        );
    }
    if a.is_pending() {
        // Long-polls the state and reloads once it changes (decided on Slack, the API,
        // another browser, or expired). Data travels in attributes, never inside the script.
        let _ = write!(
            body,
            "<span id=\"watch\" hidden data-url=\"/approvals/{id}/state\" data-known=\"{known}\"></span>\
             <script nonce=\"{nonce}\">(function(){{var w=document.getElementById('watch');\
             var url=w.dataset.url,known=w.dataset.known;\
             function poll(){{fetch(url+'?known='+encodeURIComponent(known),{{credentials:'same-origin',cache:'no-store'}})\
             .then(function(r){{if(!r.ok)throw r.status;return r.json();}})\
             .then(function(s){{if(s.known!==known){{location.reload();}}else{{poll();}}}})\
             .catch(function(){{setTimeout(poll,5000);}});}}poll();}})();</script>",
            id = esc(a.id.as_str()),
            known = esc(&known(a)),
            nonce = esc(d.nonce),
        );
    }
    body
}

/// A short text that changes whenever the approval does (state and votes): the page
/// reloads when the server's differs from the one it was rendered with.
pub(super) fn known(a: &Approval) -> String {
    format!("{}.{}", a.state.as_str(), a.votes.len())
}

fn votes(a: &Approval) -> String {
    let mut out = format!("<section class=\"card\"><strong>Decisions</strong> <span class=\"muted\">{}</span>", esc(&progress(a)));
    if a.votes.is_empty() {
        out.push_str("<p class=\"muted\">None yet.</p>");
    } else {
        out.push_str("<ul class=\"votes\">");
        for v in &a.votes {
            let comment = v.comment.as_deref().map(|c| format!(": “{}”", esc(c))).unwrap_or_default();
            let _ = write!(
                out,
                "<li><strong>{verdict}</strong> by {who} via {channel} at {at}{comment}</li>",
                verdict = esc(v.verdict.as_str()),
                who = esc(&v.approver),
                channel = esc(&v.channel),
                at = esc(&rfc3339(v.at_ms)),
            );
        }
        out.push_str("</ul>");
    }
    if let Some(reason) = &a.settled_reason {
        let _ = write!(out, "<p class=\"muted\">Settled: {}</p>", esc(reason));
    }
    out.push_str("</section>");
    out
}

/// The absolute expiry with how far off it is (`in 4 min`, `2 h ago`), as HTML: both are
/// rendered on the server, so a page needs no script to read it.
fn expiry(a: &Approval, now: u64) -> String {
    format!("{} <span class=\"muted\">({})</span>", esc(&a.expires_at()), esc(&relative(a.expires_ms, now)))
}

/// How far `at` is from `now` (both unix milliseconds), in the largest two units.
pub(crate) fn relative(at: u64, now: u64) -> String {
    let (secs, future) = if at >= now { ((at - now) / 1000, true) } else { ((now - at) / 1000, false) };
    let span = match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 if secs % 3600 / 60 == 0 => format!("{} h", secs / 3600),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    };
    if future { format!("in {span}") } else { format!("{span} ago") }
}

fn progress(a: &Approval) -> String {
    format!("{} of {} approvals", a.approvals(), a.quorum)
}

fn needs(a: &Approval) -> String {
    let who = if a.approvers.is_empty() { "anyone signed in but the caller".to_owned() } else { a.approvers.join(", ") };
    match a.kind {
        crate::approval::Kind::Confirm => "the caller's own confirmation".to_owned(),
        crate::approval::Kind::Approve if a.quorum == 1 => format!("1 approval from {who}"),
        crate::approval::Kind::Approve => format!("{} approvals from {who}", a.quorum),
    }
}

fn risk_badge(risk: &str) -> String {
    // Only known risks become a class name; anything else renders plain.
    let class = match risk {
        "low" | "medium" | "high" | "critical" => risk,
        _ => "unknown",
    };
    format!("<span class=\"badge risk-{class}\">{}</span>", esc(risk))
}

/// Percent-encodes a query value (the `next` path).
pub(super) fn url_component(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_shows_arguments_too_long_for_any_card_whole() {
        let note = "harmless ".repeat(2000);
        let a = crate::approval::sample_approval(serde_json::json!({"a_note": note, "bucket": "prod-customers"}), None, "r");
        let html = detail(&a, &Detail { csrf: None, note: None, nonce: "n" });
        assert!(html.contains(note.trim_end()) && html.contains("prod-customers"));
    }

    #[test]
    fn escaping_writes_bidi_overrides_and_c1_controls_visibly() {
        assert_eq!(esc("a\u{202e}<b>\u{85}"), "a\\u202e&lt;b&gt;\\u0085");
    }

    #[test]
    fn escaping_covers_markup_and_both_quotes() {
        assert_eq!(esc(r#"<img src=x onerror='a()'>&"#), "&lt;img src=x onerror=&#39;a()&#39;&gt;&amp;");
        assert_eq!(esc("\"x\""), "&quot;x&quot;");
    }

    #[test]
    fn expiry_is_said_relative_to_now_too() {
        let now = 1_800_000_000_000;
        assert_eq!(relative(now + 45_000, now), "in 45 s");
        assert_eq!(relative(now + 299_000, now), "in 4 min");
        assert_eq!(relative(now + 7_200_000, now), "in 2 h");
        assert_eq!(relative(now + 7_500_000, now), "in 2 h 5 min");
        assert_eq!(relative(now + 90_000_000, now), "in 1 d 1 h");
        assert_eq!(relative(now - 120_000, now), "2 min ago");
        let a = crate::approval::sample_approval(serde_json::json!({}), None, "r");
        let shown = expiry(&a, a.expires_ms - 60_000);
        assert!(shown.starts_with(&a.expires_at()) && shown.contains("(in 1 min)"), "{shown}");
    }

    #[test]
    fn the_header_shows_the_display_name_and_the_principal_small() {
        let page = layout("t", "n", &Header { who: Some(("Dana <Scully>", "https://idp#42")) }, "");
        assert!(page.contains("<strong id=\"display-name\">Dana &lt;Scully&gt;</strong> <small id=\"principal\">https://idp#42</small>"), "{page}");
        let page = layout("t", "n", &Header { who: Some(("dana", "dana")) }, "");
        assert!(!page.contains("<small"), "the principal is not repeated");
    }

    #[test]
    fn an_unknown_risk_does_not_become_a_class() {
        assert!(risk_badge("x\" onmouseover=\"y").contains("risk-unknown"));
        assert!(!risk_badge("x\" onmouseover=\"y").contains("\" onmouseover"));
    }
}
