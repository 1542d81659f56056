//! The tape scanner against serde_json on arbitrary bytes: both accept or both reject a
//! text (serde_json reading it into a `Value`), and for an accepted object the members
//! ndpipe finds (keys and the exact spans of their values, in order, duplicates
//! included) are serde_json's (read as raw values).
//!
//! `cargo +nightly fuzz run tape_vs_serde_json` (see README: Fuzzing).

#![no_main]

use std::fmt;

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// An object's members as serde_json reads them: (key, raw value text), in order.
struct Members<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members<'de>, A::Error> {
                let mut members = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    members.push((k, v));
                }
                Ok(Members(members))
            }
        }
        d.deserialize_map(V)
    }
}

fuzz_target!(|data: &[u8]| {
    // The tape only ever sees UTF-8 (the framer checks it first).
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut tape = Vec::new();
    let ours = ndpipe::tape::parse(text, &mut tape);
    // serde_json's own reading of a document: numbers must fit an f64 (1e400 is
    // refused, as the tape refuses it: it would become a value jq and JSON Schema cannot
    // hold), nesting stops at 128 levels.
    let theirs = serde_json::from_str::<serde_json::Value>(text);
    assert_eq!(
        ours.is_ok(),
        theirs.is_ok(),
        "accept/reject differ on {text:?}: ours {ours:?}, serde_json {theirs:?}"
    );
    let Ok(value) = theirs else { return };
    if !value.is_object() {
        assert!(ndpipe::json::scan_object(text).is_err());
        return;
    }
    let members = ndpipe::json::scan_object(text).expect("an object scans");
    let Members(expected) = serde_json::from_str(text).expect("an object");
    assert_eq!(members.len(), expected.len(), "member count of {text:?}");
    for (m, (key, value)) in members.iter().zip(&expected) {
        assert_eq!(&m.key_str(text), key, "key in {text:?}");
        assert_eq!(&text[m.value()], value.get(), "value of {key:?} in {text:?}");
    }
});
