//! Canonical JSON: the one byte form used for hashing and signing.
//!
//! Owns: `canonical`, the serialisation every digest, chain hash and signature goes through.
//! Uses: serde_json values.
//! Must not: depend on serde_json's map order or float formatting staying the same.
//!
//! The form:
//! - object keys sorted by their UTF-8 bytes (which is Unicode code point order);
//! - no whitespace anywhere;
//! - strings escaped minimally: `"` `\` and control characters (`\b \f \n \r \t`, others as
//!   `\u00xx` with lowercase hex); everything else, including non-ASCII, written as UTF-8;
//! - integers (any `i64`/`u64`) in plain decimal;
//! - floats: a float with no fractional part and magnitude below 2^53 is written as an
//!   integer (`1.0` → `1`, `-0.0` → `0`); any other float in the shortest form that reads
//!   back to the same `f64`, as ryu prints it (`0.1`, `1e-7`, `1.5e300`). JSON cannot carry
//!   NaN or infinities, so they never occur.

use serde_json::Value;

/// The canonical bytes of `value`.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // serde_json's default map is already sorted, but a feature flag elsewhere in the
            // dependency graph (`preserve_order`) would silently change that; sort here.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Largest magnitude below which every integral `f64` is exact.
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0; // 2^53

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(i) = n.as_u64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        if f.fract() == 0.0 && f.abs() < EXACT_INT_LIMIT {
            // In range, so the cast is exact; `-0.0` becomes `0`.
            out.extend_from_slice((f as i64).to_string().as_bytes());
        } else {
            // serde_json prints finite floats with ryu's shortest round-trip form.
            let text = serde_json::Number::from_f64(f)
                .map(|n| n.to_string())
                .unwrap_or_else(|| "null".to_owned());
            out.extend_from_slice(text.as_bytes());
        }
    }
}

fn write_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(v: Value) -> String {
        String::from_utf8(canonical(&v)).unwrap()
    }

    #[test]
    fn keys_are_sorted_and_whitespace_is_dropped() {
        assert_eq!(
            text(json!({"b": 1, "a": [true, null], "A": {}})),
            r#"{"A":{},"a":[true,null],"b":1}"#
        );
    }

    #[test]
    fn integral_floats_are_written_as_integers() {
        assert_eq!(
            text(json!([1.0, -0.0, 2.5, 1e-7, -12, u64::MAX])),
            "[1,0,2.5,1e-7,-12,18446744073709551615]"
        );
    }

    #[test]
    fn strings_escape_only_quotes_backslashes_and_controls() {
        assert_eq!(
            text(json!("a\"b\\c\n\u{1}é/")),
            "\"a\\\"b\\\\c\\n\\u0001é/\""
        );
    }

    #[test]
    fn canonical_output_parses_back_to_the_same_value() {
        let v = json!({"z": {"y": [1, "two", {"x": null}]}, "emoji": "\u{1F600}"});
        assert_eq!(serde_json::from_slice::<Value>(&canonical(&v)).unwrap(), v);
    }
}
