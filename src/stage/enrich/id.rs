//! `--id`: deterministic ids, SHA-256 over canonical JSON of the chosen fields.

use sha2::{Digest, Sha256};

use crate::event::{Event, Reject};
use crate::json::{self, FieldPath};

/// `sha256([v1,v2,...])` over canonical JSON, as a JSON string; see `--id`.
pub(super) fn compute_id(
    event: &mut Event,
    from: &[FieldPath],
    meta: &str,
) -> std::result::Result<[u8; ID_LEN], Reject> {
    // The canonical text is hashed as it is produced, piece by piece.
    let mut hash = Sha256::new();
    hash.update(b"[");
    for (i, path) in from.iter().enumerate() {
        let raw = event.get(path, meta).ok_or_else(|| {
            Reject::new(
                "missing_field",
                format!("--id-from field {path} is missing"),
            )
        })?;
        if i > 0 {
            hash.update(b",");
        }
        if is_canonical_scalar(raw) {
            hash.update(raw.as_bytes());
        } else {
            let value: serde_json::Value = serde_json::from_str(raw).map_err(|e| {
                Reject::new("malformed_json", format!("--id-from field {path}: {e}"))
            })?;
            let mut canon = String::new();
            write_canonical(&value, &mut canon);
            hash.update(canon.as_bytes());
        }
    }
    hash.update(b"]");
    let mut id = [b'"'; ID_LEN];
    for (pair, b) in id[1..ID_LEN - 1].chunks_exact_mut(2).zip(hash.finalize()) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(b)]);
    }
    Ok(id)
}

/// The two lowercase hex digits of every byte value.
pub(super) static HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = [HEX[i >> 4], HEX[i & 15]];
        i += 1;
    }
    t
};

/// The JSON text of an id: 64 hex digits in quotes.
pub(super) const ID_LEN: usize = 66;

/// Raw JSON text that serde_json would print the same way: a string without escapes,
/// or an integer other than `-0`.
pub(super) fn is_canonical_scalar(raw: &str) -> bool {
    match raw.as_bytes().first() {
        Some(b'"') => memchr::memchr(b'\\', raw.as_bytes()).is_none(),
        Some(b'-' | b'0'..=b'9') => {
            raw != "-0" && raw.len() < 19 && raw.bytes().skip(1).all(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

/// Compact JSON with object keys sorted by their UTF-8 bytes, whatever the map order.
pub fn write_canonical(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&json::quote(k));
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}
