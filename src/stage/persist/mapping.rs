//! How an event becomes a row of the table: key, version, payload, typed columns,
//! tombstones, and the source position it carries.

use std::borrow::Cow;
use std::sync::Arc;

use crate::event::{Event, Reject};
use crate::json::{self, FieldPath};

use super::offsets::Position;
use super::version::{Version, VersionType};
use super::{ColumnMap, Layout, OnConflict, Options, Tombstones};

/// One event ready to load.
pub struct Row {
    pub key: String,
    /// A hash of the key, made while the key is at hand: by it rows go to their
    /// connection, and the keys a run stored are known ([`super::written`]).
    pub key_hash: u64,
    /// The event's JSON text without the metadata field, when it differs from the
    /// event's text (see [`Row::payload`]).
    pub(super) payload: Option<String>,
    /// The metadata field's JSON text.
    pub meta: Option<String>,
    pub version: Option<Box<Version>>,
    /// Typed column values as text (JSON text for json/jsonb columns); None is NULL.
    pub columns: Box<[Option<String>]>,
    pub pos: Option<Box<Position>>,
    pub event: Event,
    pub source: Arc<str>,
    /// A tombstone under `--tombstones delete`: the row of `key` is deleted.
    pub delete: bool,
    /// The trace of the batch it came in, when sampled ([`crate::trace`]): the
    /// transaction that commits it records a span there.
    pub trace: Option<Arc<opentelemetry::trace::SpanContext>>,
}

/// The hash of a key ([`Row::key_hash`]): fixed (the same in every run and process), and
/// good in all its bits, which pick a connection and a filter block and bits. SipHash's
/// defence against chosen keys is not needed here (it was 2 % of the pipeline's time
/// into PostgreSQL).
pub fn key_hash(key: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::quality::FixedState::default().hash_one(key)
}

impl Row {
    /// The JSON text stored as `payload`: the event without the metadata field (unless
    /// `--keep-meta`).
    pub fn payload(&self) -> &str {
        self.payload.as_deref().unwrap_or_else(|| self.event.text())
    }
}

/// How events map onto the table's rows, fixed (against its layout) before the first
/// event.
pub struct Mapping {
    pub key: FieldPath,
    pub keep_meta: bool,
    pub columns: Vec<ColumnMap>,
    /// Per typed column: whether it takes JSON text (json/jsonb) rather than a scalar.
    pub column_json: Vec<bool>,
    pub version: Option<(FieldPath, VersionType)>,
    pub on_conflict: OnConflict,
    pub tombstones: Tombstones,
    /// `META.tombstone` and `META.key`: where a tombstone says so, and its key.
    pub(super) tombstone_flag: FieldPath,
    pub(super) tombstone_key: FieldPath,
}

impl Mapping {
    pub fn new(opts: &Options, layout: &Layout) -> Mapping {
        Mapping {
            key: opts.key.clone(),
            keep_meta: opts.keep_meta,
            columns: opts.columns.clone(),
            column_json: layout
                .columns
                .iter()
                .map(|(_, ty)| ty == "json" || ty == "jsonb")
                .collect(),
            version: opts
                .version_field
                .clone()
                .map(|f| (f, layout.version.unwrap_or(opts.version_type))),
            on_conflict: opts.on_conflict,
            tombstones: opts.tombstones,
            tombstone_flag: FieldPath::parse(&format!("{}.tombstone", opts.meta_field))
                .expect("a field name and a plain segment"),
            tombstone_key: FieldPath::parse(&format!("{}.key", opts.meta_field))
                .expect("a field name and a plain segment"),
        }
    }

    /// Turns an event into a row, or says why it cannot be one.
    pub(super) fn row(
        &self,
        mut event: Event,
        meta_field: &str,
        source: &Arc<str>,
        pos: Option<Position>,
    ) -> std::result::Result<Row, (Event, Reject)> {
        match self.extract(&mut event, meta_field) {
            Ok((key, payload, meta, version, columns, delete)) => {
                // Rows wait for their transaction: keep them small.
                event.drop_index();
                Ok(Row {
                    key_hash: key_hash(&key),
                    key,
                    payload,
                    meta,
                    version: version.map(Box::new),
                    columns: columns.into_boxed_slice(),
                    pos: pos.map(Box::new),
                    event,
                    source: source.clone(),
                    delete,
                    trace: None,
                })
            }
            Err(r) => Err((event, r)),
        }
    }

    /// The key of an ordinary event: the `--key` field, a string or a number.
    pub(super) fn key_of(
        &self,
        event: &mut Event,
        meta_field: &str,
    ) -> std::result::Result<String, Reject> {
        Ok(match event.get(&self.key, meta_field) {
            None | Some("null") => {
                return Err(Reject::new(
                    "missing_key",
                    format!("key field {} is missing", self.key),
                ))
            }
            Some(raw) => scalar_text(raw).ok_or_else(|| {
                Reject::new(
                    "bad_key",
                    format!(
                        "key field {} is {}, not a string or a number",
                        self.key,
                        json::type_of(raw)
                    ),
                )
            })?,
        })
    }

    #[allow(clippy::type_complexity)]
    pub(super) fn extract(
        &self,
        event: &mut Event,
        meta_field: &str,
    ) -> std::result::Result<
        (
            String,
            Option<String>,
            Option<String>,
            Option<Version>,
            Vec<Option<String>>,
            bool,
        ),
        Reject,
    > {
        event.decode()?;
        let delete = event.get_with_meta(&self.tombstone_flag) == Some("true");
        if delete && self.tombstones == Tombstones::DeadLetter {
            return Err(Reject::new(
                "tombstone",
                "a tombstone (a message with a null payload); persist --tombstones delete \
                 deletes its key's row",
            ));
        }
        let key = if delete {
            let raw = event.get_with_meta(&self.tombstone_key).unwrap_or("null");
            scalar_text(raw).ok_or_else(|| {
                Reject::new(
                    "missing_key",
                    format!("a tombstone without a message key ({})", self.tombstone_key),
                )
            })?
        } else {
            self.key_of(event, meta_field)?
        };
        let version = match &self.version {
            None => None,
            Some((path, ty)) => {
                // The metadata is visible here: `_meta.offset` orders one partition's events.
                let raw = event.get_with_meta(path).ok_or_else(|| {
                    Reject::new(
                        "missing_version",
                        format!("version field {path} is missing"),
                    )
                })?;
                Some(Version::parse(raw, *ty).map_err(|e| {
                    Reject::new("bad_version", format!("version field {path}: {e}"))
                })?)
            }
        };
        let mut columns = Vec::with_capacity(self.columns.len());
        for (c, &as_json) in self.columns.iter().zip(&self.column_json) {
            columns.push(match event.get(&c.field, meta_field) {
                None | Some("null") => None,
                Some(raw) if as_json => Some(raw.to_owned()),
                Some(raw) => Some(scalar_text(raw).unwrap_or_else(|| raw.to_owned())),
            });
        }
        let (text, members) = event.text_and_members();
        let meta = json::find(text, members, meta_field).map(|m| text[m.value()].to_owned());
        // PostgreSQL's jsonb refuses \u0000; both databases refuse it alike.
        if has_nul_escape(text) {
            return Err(Reject::new(
                "nul_in_json",
                "a string holds \\u0000, which jsonb cannot store",
            ));
        }
        let payload = match (self.keep_meta, json::remove(text, members, meta_field)) {
            (true, _) | (false, Cow::Borrowed(_)) => None,
            (false, Cow::Owned(p)) => Some(p),
        };
        Ok((key, payload, meta, version, columns, delete))
    }

    /// Whether `new` beats `old` for the same key inside one batch.
    pub(super) fn wins(&self, new: &Row, old: &Row) -> bool {
        let by_version = match (&new.version, &old.version) {
            (Some(a), Some(b)) => a.order(b),
            _ => std::cmp::Ordering::Equal,
        };
        match by_version {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Less => false,
            // Ties: the last in input order updates; with `ignore` the first stays.
            std::cmp::Ordering::Equal => self.on_conflict == OnConflict::Update,
        }
    }
}

/// A string's unescaped text, or a number's or boolean's text; None for objects, arrays
/// and null.
pub(super) fn scalar_text(raw: &str) -> Option<String> {
    match raw.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw).ok(),
        // Objects, arrays, null; and booleans, whose text would collide with the strings
        // "true" and "false".
        b'{' | b'[' | b'n' | b't' | b'f' => None,
        _ => Some(raw.to_owned()),
    }
}

/// Whether JSON text holds the escape `\u0000` (an even run of backslashes before `u0000`
/// is not an escape).
pub(super) fn has_nul_escape(text: &str) -> bool {
    // Built once: building the searcher for every row was 2 % of a pipeline into
    // PostgreSQL.
    static U0000: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"u0000"));
    let b = text.as_bytes();
    U0000.find_iter(b).any(|i| {
        let slashes = b[..i].iter().rev().take_while(|&&c| c == b'\\').count();
        slashes % 2 == 1
    })
}
