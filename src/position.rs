//! Source positions: where an event came from, in a source that can resume there. Owned
//! by neither the sources that stamp them nor the sink that commits them: sources write
//! them ([`push_generic`]), `persist` reads them ([`from_meta`]).
//!
//! A position is (source kind, stream, partition, offset), with the epoch of the owner
//! that read it and, when one input became several events, how many. Kafka fills it with
//! its consumer group (the scope), topic (the stream), partition and offset; `ingest-file`
//! with its `--positions-name`, the file's identity, partition 0 and the offset of the
//! line's last byte (its newline), so that the next offset committed is where the next
//! line starts. `persist`
//! commits, in the rows' transaction, the next offset of every (scope, stream, partition)
//! it stores events of, without knowing what kind of source that is.
//!
//! In the metadata field a position is written either in the generic form
//!
//! ```text
//! "position":{"source":KIND,"scope":S,"stream":T,"partition":P,"offset":O,"epoch":E}
//! ```
//!
//! or as Kafka's coordinates, the way `ingest-kafka` writes them (`"group"`, `"topic"`,
//! `"partition"`, `"offset"`, `"epoch"` beside `"source":"kafka"`). A Kafka position's
//! scope is its group as it is; any other kind's scope is prefixed with its kind
//! (`file:loader`), so no two kinds share a row of the offsets table.

use std::collections::HashMap;
use std::sync::Arc;

/// One partition of one stream, within one scope: a row of the offsets table.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    /// Who reads the stream: a Kafka consumer group, `KIND:NAME` for other kinds.
    pub scope: String,
    /// What is read: a Kafka topic, a file's identity.
    pub stream: String,
    pub partition: i32,
}

/// Where an event came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    pub key: Arc<StreamKey>,
    pub offset: i64,
    /// The epoch of the owner that read it (exactly-once mode: fencing).
    pub epoch: Option<i64>,
    /// How many events the input became (`split.count`), 1 when not split.
    pub count: u32,
}

/// Interns stream keys: events of one partition share one key.
#[derive(Default)]
pub struct Keys(HashMap<StreamKey, Arc<StreamKey>>);

impl Keys {
    fn intern(&mut self, key: StreamKey) -> Arc<StreamKey> {
        if let Some(k) = self.0.get(&key) {
            return k.clone();
        }
        let k = Arc::new(key.clone());
        self.0.insert(key, k.clone());
        k
    }
}

/// Appends the generic form, `"position":{…}` (a member of the metadata object), for
/// a source of kind `source` (not `kafka`, whose coordinates are written its own way):
/// `scope` is the reader's name without the kind (`from_meta` prefixes it).
pub fn push_generic(
    out: &mut String,
    source: &str,
    scope: &str,
    stream: &str,
    partition: i32,
    offset: i64,
    epoch: Option<i64>,
) {
    let mut num = itoa::Buffer::new();
    out.push_str("\"position\":{\"source\":");
    crate::json::push_quoted(out, source);
    out.push_str(",\"scope\":");
    crate::json::push_quoted(out, scope);
    out.push_str(",\"stream\":");
    crate::json::push_quoted(out, stream);
    out.push_str(",\"partition\":");
    out.push_str(num.format(partition));
    out.push_str(",\"offset\":");
    out.push_str(num.format(offset));
    if let Some(e) = epoch {
        out.push_str(",\"epoch\":");
        out.push_str(num.format(e));
    }
    out.push('}');
}

/// The position in the metadata field's text `meta`, when it holds a whole one.
pub fn from_meta(meta: Option<&str>, keys: &mut Keys) -> Option<Position> {
    #[derive(serde::Deserialize)]
    struct Split {
        count: Option<u32>,
    }
    #[derive(serde::Deserialize)]
    struct Generic {
        source: String,
        scope: String,
        stream: String,
        partition: i32,
        offset: i64,
        epoch: Option<i64>,
    }
    #[derive(serde::Deserialize)]
    struct Meta {
        position: Option<Generic>,
        group: Option<String>,
        topic: Option<String>,
        partition: Option<i32>,
        offset: Option<i64>,
        epoch: Option<i64>,
        split: Option<Split>,
    }
    let meta = meta?;
    // Most metadata carries no position: skip those without parsing them.
    if !meta.contains("\"offset\"") {
        return None;
    }
    let m: Meta = serde_json::from_str(meta).ok()?;
    let count = m.split.and_then(|s| s.count).unwrap_or(1);
    if let Some(p) = m.position {
        let scope = if p.source == "kafka" {
            p.scope
        } else {
            format!("{}:{}", p.source, p.scope)
        };
        return Some(Position {
            key: keys.intern(StreamKey {
                scope,
                stream: p.stream,
                partition: p.partition,
            }),
            offset: p.offset,
            epoch: p.epoch,
            count,
        });
    }
    Some(Position {
        key: keys.intern(StreamKey {
            scope: m.group?,
            stream: m.topic?,
            partition: m.partition?,
        }),
        offset: m.offset?,
        epoch: m.epoch,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_and_generic_positions() {
        let mut keys = Keys::default();
        let k = from_meta(
            Some(r#"{"source":"kafka","group":"g","topic":"t","partition":2,"offset":7,"epoch":3,"split":{"index":0,"count":2}}"#),
            &mut keys,
        )
        .unwrap();
        assert_eq!(
            (k.key.scope.as_str(), k.key.stream.as_str(), k.key.partition),
            ("g", "t", 2)
        );
        assert_eq!((k.offset, k.epoch, k.count), (7, Some(3), 2));
        let f = from_meta(
            Some(r#"{"position":{"source":"file","scope":"loader","stream":"dev1:ino42","partition":0,"offset":4096}}"#),
            &mut keys,
        )
        .unwrap();
        assert_eq!(f.key.scope, "file:loader");
        assert_eq!((f.offset, f.epoch, f.count), (4096, None, 1));
        // Events of one partition share one key.
        let again = from_meta(
            Some(r#"{"group":"g","topic":"t","partition":2,"offset":8}"#),
            &mut keys,
        )
        .unwrap();
        assert!(Arc::ptr_eq(&k.key, &again.key));
        // What push_generic writes is read back.
        let mut written = String::from("{\"source\":\"file\",");
        push_generic(&mut written, "file", "loader", "1:2:3:abc", 0, 99, Some(4));
        written.push('}');
        let w = from_meta(Some(&written), &mut keys).unwrap();
        assert_eq!(
            (
                w.key.scope.as_str(),
                w.key.stream.as_str(),
                w.offset,
                w.epoch
            ),
            ("file:loader", "1:2:3:abc", 99, Some(4))
        );
        // No position, or half of one: none.
        assert!(from_meta(Some(r#"{"source":"http"}"#), &mut keys).is_none());
        assert!(from_meta(Some(r#"{"topic":"t","offset":1}"#), &mut keys).is_none());
        assert!(from_meta(None, &mut keys).is_none());
    }
}
