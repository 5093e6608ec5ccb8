//! Text people read: the one escape for characters that change what a reader sees.
//!
//! Owns: `for_people`, used by every human-facing output (the text forms of `log tail` and
//! `log show`, the approver page, the Slack and Teams cards, the CLI's approval views).
//! Uses: nothing of ours.
//! Must not: know any output but HTML: `html` is the one HTML escape (the approver page and
//! the report); chat outputs add their own markup escaping (mrkdwn, Markdown) after.
//!
//! Agents and clients choose these characters: C0 controls other than newline and tab, DEL
//! and C1 controls (terminal escapes, `NEL`), bidirectional overrides, isolates and marks
//! (U+202A–202E, U+2066–2069, U+200E/F, U+061C: text that reads in a different order than
//! it is stored), and the line and paragraph separators U+2028/2029 (a line break that is
//! not a `\n`). Each becomes `\uXXXX`, which is also its JSON escape, so a JSON line run
//! through this stays JSON that decodes to the same value.

use std::borrow::Cow;
use std::fmt::Write;

/// Whether a person should see `c` escaped rather than have it act on the text around it.
pub fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{8}' | '\u{b}'..='\u{1f}' | '\u{7f}'..='\u{9f}'
        | '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every character [`needs_escape`] names written `\uXXXX` (lowercase hex).
pub fn for_people(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if needs_escape(c) {
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` for HTML element content and quoted attribute values: [`for_people`], then the
/// five markup characters as entities.
pub fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in for_people(text).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_c1_and_separators_are_escaped_and_the_rest_kept() {
        let hostile = "a\u{202e}b\u{2066}c\u{200f}d\u{61c}e\u{85}f\u{9b}g\u{2028}h\u{2029}i\u{1b}[31m\u{7f}";
        assert_eq!(
            for_people(hostile),
            "a\\u202eb\\u2066c\\u200fd\\u061ce\\u0085f\\u009bg\\u2028h\\u2029i\\u001b[31m\\u007f"
        );
        assert!(matches!(for_people("plain é 漢字\n\tok"), Cow::Borrowed(_)));
    }

    #[test]
    fn an_escaped_json_line_decodes_to_the_same_value() {
        let value = serde_json::json!({"path": "/tmp/\u{202e}fdp.exe", "n": "\u{85}\u{2028}"});
        let line = serde_json::to_string(&value).unwrap();
        let shown = for_people(&line);
        assert!(!shown.chars().any(needs_escape), "{shown}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&shown).unwrap(), value);
    }
}
