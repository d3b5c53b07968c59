//! Canonical JSON (FORMAT §5): object keys sorted by their UTF-8 bytes, no whitespace,
//! integers only, strings escaped as JSON requires and nothing more. Writers use this;
//! verifiers never re-serialise: they check signatures over the bytes exactly as stored.

use serde::Serialize;
use serde_json::Value;

use crate::error::Error;

/// Serialises `value` as canonical JSON.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, Error> {
    let value = serde_json::to_value(value)
        .map_err(|_| Error::Bug("document does not serialise to JSON"))?;
    let mut out = Vec::new();
    write_value(&value, &mut out)?;
    Ok(out)
}

fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), Error> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) if n.is_u64() || n.is_i64() => {
            out.extend_from_slice(n.to_string().as_bytes())
        }
        Value::Number(_) => return Err(Error::Bug("canonical JSON has no floating-point numbers")),
        Value::String(s) => write_string(s, out)?,
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            // Sort explicitly: serde_json's map is only sorted without `preserve_order`.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out)?;
                out.push(b':');
                write_value(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) -> Result<(), Error> {
    // serde_json escapes `"`, `\` and control characters (as \b \f \n \r \t or \u00xx) only.
    serde_json::to_writer(out, s).map_err(|_| Error::Bug("string does not serialise"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_sorted_no_whitespace() {
        let v = json!({"b": 1, "a": {"z": [1, 2], "_": "x\n\"\u{e9}"}, "aa": true});
        let s = String::from_utf8(to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            s,
            "{\"a\":{\"_\":\"x\\n\\\"\u{e9}\",\"z\":[1,2]},\"aa\":true,\"b\":1}"
        );
    }

    #[test]
    fn floats_are_refused() {
        assert!(to_vec(&json!({"a": 1.5})).is_err());
    }
}
