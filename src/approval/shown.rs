//! How much of a hold's arguments a chat card can show: whole members or none.
//!
//! Owns: `Shown::fit`, the choice of which top-level argument members a card shows in full
//! and which it names as cut.
//! Uses: `text::for_people` for every character a person reads.
//! Must not: cut inside a value. A clipped prefix reads as the whole (a long harmless field
//! before `"bucket": "prod-customers"` once hid the bucket), so a member is shown entirely
//! or not at all, and a card that cut anything says so and offers no Approve button.

use serde_json::{Map, Value};

use crate::text::for_people;

/// Names of cut keys listed on a card; more are counted, not named.
const NAMES_MAX: usize = 20;
/// Longest cut key name as listed (it is a label; the page shows it whole).
const NAME_MAX: usize = 60;

/// The arguments as a card shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Shown {
    /// Pretty JSON of the members shown, after `render` (the channel's escaping).
    pub(crate) text: String,
    /// Top-level keys left out, in argument order; empty: everything is shown.
    pub(crate) cut: Vec<String>,
}

impl Shown {
    /// Fits `args` into `max` characters of `render(pretty JSON)`. `render` is the channel's
    /// escaping and is applied after `for_people`.
    pub(crate) fn fit(args: &Value, max: usize, render: impl Fn(&str) -> String) -> Shown {
        let show = |value: &Value| render(&for_people(&serde_json::to_string_pretty(value).unwrap_or_default()));
        let whole = show(args);
        if whole.chars().count() <= max {
            return Shown { text: whole, cut: Vec::new() };
        }
        let Value::Object(members) = args else {
            return Shown { text: String::new(), cut: vec!["(all arguments)".to_owned()] };
        };
        // Pick members by their size alone (linear), then check the real text and drop the
        // last kept member until it fits.
        let mut kept: Vec<&String> = Vec::new();
        let mut cut: Vec<String> = Vec::new();
        let mut used = 4; // "{\n" and "\n}"
        for (key, value) in members {
            let one = show(&Value::Object(Map::from_iter([(key.clone(), value.clone())])));
            let cost = one.chars().count().saturating_sub(4) + 2; // its line(s) and ",\n"
            if used + cost <= max {
                used += cost;
                kept.push(key);
            } else {
                cut.push(key.clone());
            }
        }
        loop {
            let subset: Map<String, Value> = kept.iter().map(|k| ((*k).clone(), members[k.as_str()].clone())).collect();
            let text = show(&Value::Object(subset));
            if text.chars().count() <= max || kept.is_empty() {
                let text = if kept.is_empty() { String::new() } else { text };
                let order = |k: &String| members.keys().position(|m| m == k);
                cut.sort_by_key(order);
                return Shown { text, cut };
            }
            if let Some(dropped) = kept.pop() {
                cut.push(dropped.clone());
            }
        }
    }

    /// Whether nothing was cut.
    pub(crate) fn is_whole(&self) -> bool {
        self.cut.is_empty()
    }

    /// The cut keys for a notice, each through `render`: at most 20 names, each at most 60
    /// characters, then how many more.
    pub(crate) fn cut_names(&self, render: impl Fn(&str) -> String) -> String {
        let mut names: Vec<String> =
            self.cut.iter().take(NAMES_MAX).map(|k| render(&super::clip(&for_people(k), NAME_MAX))).collect();
        if self.cut.len() > NAMES_MAX {
            names.push(format!("and {} more", self.cut.len() - NAMES_MAX));
        }
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_that_fit_are_shown_whole() {
        let shown = Shown::fit(&json!({"bucket": "b"}), 100, str::to_owned);
        assert!(shown.is_whole());
        assert!(shown.text.contains("\"bucket\": \"b\""));
    }

    #[test]
    fn a_long_member_is_cut_whole_and_the_short_one_after_it_is_shown() {
        let args = json!({"a_note": "x".repeat(2900), "bucket": "prod-customers"});
        let shown = Shown::fit(&args, 2800, str::to_owned);
        assert_eq!(shown.cut, vec!["a_note".to_owned()]);
        assert!(shown.text.contains("prod-customers") && !shown.text.contains("xxx"), "{}", shown.text);
        assert!(shown.text.chars().count() <= 2800);
    }

    #[test]
    fn escaping_that_grows_the_text_is_counted() {
        let args = json!({"a": "<".repeat(30), "b": "c"});
        let shown = Shown::fit(&args, 60, |t| t.replace('<', "&lt;"));
        assert_eq!(shown.cut, vec!["a".to_owned()]);
        assert!(shown.text.chars().count() <= 60);
    }

    #[test]
    fn many_cut_keys_are_counted_past_twenty() {
        let args = Value::Object((0..30).map(|i| (format!("k{i:02}"), json!("v".repeat(50)))).collect());
        let shown = Shown::fit(&args, 10, str::to_owned);
        assert_eq!(shown.cut.len(), 30);
        assert!(shown.cut_names(str::to_owned).ends_with("and 10 more"));
    }
}
