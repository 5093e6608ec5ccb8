//! Canonical JSON: the one byte form used for hashing and signing.
//!
//! Owns: `canonical`, the serialisation every digest, chain hash and signature goes through,
//! and `canonical_value`, the value those bytes read back as (what is forwarded, so a
//! downstream gets `1` for an approved `1`, never a `1.0` that digests the same).
//! Uses: serde_json values.
//! Must not: depend on serde_json's map order or float formatting staying the same.
//!
//! The form:
//! - object keys sorted by their UTF-8 bytes (which is Unicode code point order);
//! - no whitespace anywhere;
//! - strings escaped minimally: `"` `\` and control characters (`\b \f \n \r \t`, others as
//!   `\u00xx` with lowercase hex); everything else, including non-ASCII, written as UTF-8;
//! - integers (any `i64`/`u64`) in plain decimal;
//! - floats (numbers serde_json holds as `f64`) as ECMAScript's `Number.prototype.toString`
//!   writes them, which is also RFC 8785 (JCS) §3.2.2.3: the shortest digits that read back
//!   to the same `f64`, plain notation for decimal exponents in [-6, 21), else `d.ddde±x`
//!   (`1.0` → `1`, `-0.0` → `0`, `0.1`, `1e-7`, `1.5e+300`, `1e+21`). JSON cannot carry
//!   NaN or infinities, so they never occur. Integers beyond 2^53 stay exact because they
//!   are `i64`/`u64`, not floats.

use serde_json::Value;

/// The canonical bytes of `value`.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    write_value(&mut out, value);
    out
}

/// The value `canonical(value)` parses back to: every number rewritten as its canonical
/// text reads (`1.0` → `1`, `-0.0` → `0`), everything else unchanged. Digests cannot tell
/// `1` from `1.0`, so what is forwarded after a decision is this form, the one digested.
pub fn canonical_value(value: &Value) -> Value {
    match value {
        Value::Number(n) => {
            let mut bytes = Vec::with_capacity(24);
            write_number(&mut bytes, n);
            // Our own number text always parses; keep the original if it somehow did not.
            serde_json::from_slice(&bytes).unwrap_or_else(|_| value.clone())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical_value).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), canonical_value(v))).collect()),
        other => other.clone(),
    }
}

/// Writes `value` in canonical form (for callers that assemble an object themselves).
pub(crate) fn write_value(out: &mut Vec<u8>, value: &Value) {
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

fn write_number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(i) = n.as_u64() {
        write_u64(out, i);
    } else if let Some(i) = n.as_i64() {
        // Not a u64, so negative.
        out.push(b'-');
        write_u64(out, i.unsigned_abs());
    } else if let Some(f) = n.as_f64() {
        write_float(out, f);
    }
}

/// ECMAScript number-to-string from Rust's shortest round-trip digits (`{:e}`).
fn write_float(out: &mut Vec<u8>, f: f64) {
    if f == 0.0 || !f.is_finite() {
        out.push(b'0');
        return;
    }
    if f < 0.0 {
        out.push(b'-');
    }
    let sci = format!("{:e}", f.abs()); // e.g. "1.2345e-7"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let digits: Vec<u8> = mantissa.bytes().filter(u8::is_ascii_digit).collect();
    let k = digits.len() as i64;
    let n = exp.parse::<i64>().unwrap_or(0) + 1; // the decimal point sits after `n` digits
    let zeros = |out: &mut Vec<u8>, count: i64| {
        out.extend(std::iter::repeat_n(b'0', count.max(0) as usize))
    };
    if k <= n && n <= 21 {
        out.extend_from_slice(&digits);
        zeros(out, n - k);
    } else if 0 < n && n <= 21 {
        let (int, frac) = digits.split_at(n as usize);
        out.extend_from_slice(int);
        out.push(b'.');
        out.extend_from_slice(frac);
    } else if -6 < n && n <= 0 {
        out.extend_from_slice(b"0.");
        zeros(out, -n);
        out.extend_from_slice(&digits);
    } else {
        out.push(digits[0]);
        if k > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        let e = n - 1;
        out.extend_from_slice(format!("e{}{}", if e >= 0 { '+' } else { '-' }, e.abs()).as_bytes());
    }
}

/// Writes `n` in plain decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    use std::io::Write as _;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{n}");
}

/// Writes `s` as a canonical JSON string.
pub(crate) fn write_string(out: &mut Vec<u8>, s: &str) {
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
    fn floats_are_written_as_ecmascript_does_and_integers_exactly() {
        assert_eq!(
            text(json!([
                1.0,
                -0.0,
                2.5,
                1e-7,
                0.000001,
                1e21,
                1e20,
                1.5e300,
                -12,
                u64::MAX
            ])),
            "[1,0,2.5,1e-7,0.000001,1e+21,100000000000000000000,1.5e+300,-12,18446744073709551615]"
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
    fn canonical_value_writes_integral_floats_as_integers() {
        let v: Value = serde_json::from_str(r#"{"n":1.0,"z":-0.0,"f":2.5,"big":1e20,"list":[3.0,{"x":1e-7}]}"#).unwrap();
        let c = canonical_value(&v);
        assert_eq!(serde_json::to_string(&c["n"]).unwrap(), "1");
        assert_eq!(serde_json::to_string(&c["z"]).unwrap(), "0");
        assert_eq!(serde_json::to_string(&c["list"][0]).unwrap(), "3");
        assert_eq!(c["f"], json!(2.5));
        assert_eq!(canonical(&c), canonical(&v), "the same canonical bytes");
    }

    #[test]
    fn canonical_output_parses_back_to_the_same_value() {
        let v = json!({"z": {"y": [1, "two", {"x": null}]}, "emoji": "\u{1F600}"});
        assert_eq!(serde_json::from_slice::<Value>(&canonical(&v)).unwrap(), v);
    }
}
