//! Principal names across identity sources: refuses names that collide or look alike.
//!
//! Owns: the rule that each source keeps to its own names. OIDC principals are
//! `{issuer}#{sub}` (an issuer URL has no `#`), so `#` is reserved for them: a static token
//! name or the stdio principal with a `#` is refused. The stdio principal must not be a
//! token's name. Names that differ but are equal after Unicode NFKC and case folding
//! (`Alice`, fullwidth `ａｌｉｃｅ`, `alice`) are refused wherever they appear: token names,
//! the stdio principal, Slack `users` values, and (among themselves) `person` links.
//! Exactly equal Slack and token names are the documented mapping, not a clash.
//! Uses: `identity::fold_name`, the raw (spanned) config.
//! Must not: accept or rewrite anything: it only reports.

use std::collections::HashMap;
use std::ops::Range;

use super::diag::{ConfigErrors, Source};
use super::raw::RawConfig;
use crate::identity::fold_name;

/// Where a name was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum From {
    Token,
    Stdio,
    Slack,
}

impl From {
    fn key(self) -> &'static str {
        match self {
            From::Token => "identity.tokens.name",
            From::Stdio => "identity.stdio_principal",
            From::Slack => "approvals.slack.users",
        }
    }
}

struct Site<'a> {
    name: &'a str,
    from: From,
    span: Range<usize>,
}

/// Reports every reserved character, cross-source collision and look-alike in `raw`.
pub(super) fn check(source: &Source<'_>, errors: &mut ConfigErrors, raw: &RawConfig) {
    let mut sites: Vec<Site<'_>> = Vec::new();
    let mut people: Vec<(&str, Range<usize>)> = Vec::new();
    if let Some(identity) = &raw.identity {
        if let Some(p) = &identity.stdio_principal
            && !p.get_ref().trim().starts_with("env:")
        {
            sites.push(Site { name: p.get_ref().trim(), from: From::Stdio, span: p.span() });
        }
        if let Some(person) = &identity.stdio_person {
            people.push((person.get_ref(), person.span()));
        }
        for token in identity.tokens.iter().flatten() {
            if let Some(name) = &token.get_ref().name {
                sites.push(Site { name: name.get_ref(), from: From::Token, span: name.span() });
            }
            if let Some(person) = &token.get_ref().person {
                people.push((person.get_ref(), person.span()));
            }
        }
        for oidc in identity.oidc.iter().flatten() {
            people.extend(oidc.get_ref().people.values().map(|p| (p.get_ref().as_str(), p.span())));
        }
    }
    if let Some(slack) = raw.approvals.as_ref().and_then(|a| a.slack.as_ref()) {
        sites.extend(slack.get_ref().users.values().map(|u| Site { name: u.get_ref(), from: From::Slack, span: u.span() }));
    }
    for site in sites.iter().filter(|s| s.from != From::Slack && s.name.contains('#')) {
        errors.push(source.problem(
            Some(site.span.clone()),
            format!(
                "key \"{}\": \"{}\" contains '#', which is reserved for OIDC principals ({{issuer}}#{{sub}})",
                site.from.key(),
                site.name
            ),
        ));
    }
    let mut seen: HashMap<String, &Site<'_>> = HashMap::new();
    for site in &sites {
        let folded = fold_name(site.name);
        let Some(first) = seen.get(&folded) else {
            seen.insert(folded, site);
            continue;
        };
        let message = if first.name != site.name {
            format!(
                "key \"{}\": \"{}\" looks like \"{}\" (line {}) after Unicode normalization and case folding; \
                 one person must have one spelling, and two people need names that differ",
                site.from.key(),
                site.name,
                first.name,
                source.line_of(first.span.start)
            )
        } else if (first.from == From::Stdio) != (site.from == From::Stdio) {
            format!(
                "key \"{}\": \"{}\" is also the {} (line {}); the stdio caller and a token must be different principals",
                site.from.key(),
                site.name,
                first.from.key(),
                source.line_of(first.span.start)
            )
        } else {
            // Equal token names are reported by the token checks; a Slack user mapped to a
            // token's name is the mapping itself.
            continue;
        };
        errors.push(source.problem(Some(site.span.clone()), message));
    }
    let mut persons: HashMap<String, (&str, usize)> = HashMap::new();
    for (name, span) in people {
        let folded = fold_name(name);
        match persons.get(&folded) {
            Some((first, line)) if *first != name => errors.push(source.problem(
                Some(span),
                format!(
                    "key \"person\": \"{name}\" looks like \"{first}\" (line {line}) after Unicode normalization \
                     and case folding; write one person's name the same way everywhere"
                ),
            )),
            Some(_) => {}
            None => {
                persons.insert(folded, (name, source.line_of(span.start)));
            }
        }
    }
}
