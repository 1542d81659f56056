complete -c persist -l database-url -d 'PostgreSQL connection: a URL (postgres://user:pass@host:port/db?sslmode=require) or libpq key=value pairs. sslmode: disable, prefer, require (encrypted, certificate not checked), verify-ca or verify-full (checked against the system\'s roots)' -r
complete -c persist -l sqlite -d 'The SQLite file used when no PostgreSQL connection is configured' -r -F
complete -c persist -l table -d 'Table to write, NAME or SCHEMA.NAME; each part matches [A-Za-z_][A-Za-z0-9_]{0,62}' -r
complete -c persist -l key -d 'The event field holding the row key (a string or a number). Events without it are dead letters' -r
complete -c persist -l key-column -d 'The table column holding the key; it needs a unique index (primary key)' -r
complete -c persist -l column -d 'Also write FIELD into the typed column COL of the table, cast to TYPE (default: the column\'s own type). A value that does not fit is a dead letter for that row only. Repeatable' -r
complete -c persist -l batch-size -d 'Rows per transaction, at most. Each connection holds two batches (one committing, one filling): at the default, 8,000 rows with two connections. 5,000 was no faster into an empty table (alone: ±3 % either way between runs; in a pipeline: the same) and held 12 MiB more' -r
complete -c persist -l linger -d 'Longest time a row waits for its batch to fill before it is written anyway: a duration (100ms, 1s). The old spelling `--linger-ms N` (milliseconds) still works' -r
complete -c persist -l version-field -d 'Event field holding a version: a stored row is only replaced by an event whose version is not older, so replaying old events never overwrites newer data. Inside one batch the highest version wins. Events without it are dead letters' -r
complete -c persist -l version-type -d 'SQL type of the version column' -r -f -a "bigint\t'64-bit integer (a JSON integer, or a string holding one)'
numeric\t'Exact decimal (a JSON number, or a string holding one)'
timestamptz\t'RFC 3339 timestamp with an offset (`2026-11-01T00:00:00Z`), compared in UTC'"
complete -c persist -l on-conflict -d 'What a row whose key is already stored does: update it (when the content differs and the version is not older), or leave the stored row alone' -r -f -a "update\t''
ignore\t''"
complete -c persist -l tombstones -d 'What a tombstone does: an event whose metadata field says "tombstone":true (a Kafka message with a null payload, as ingest-kafka writes it: a delete on a compacted topic, or from CDC). dead-letter rejects it (kind tombstone); delete deletes the row of its message key (the metadata\'s "key"), in order with that key\'s other events and under the --version-field rule (a tombstone older than the stored row deletes nothing)' -r -f -a "dead-letter\t''
delete\t''"
complete -c persist -l connections -d 'Database connections loading batches at once; rows are routed by key, so each key\'s events stay in order. SQLite always uses one. In `pipeline --file`, a new count takes effect on reload' -r
complete -c persist -l offsets-table -d 'Table of source offsets (group, topic, partition → next_offset, epoch), written in the same transaction as the rows of events that carry Kafka metadata' -r
complete -c persist -l connect-timeout -d 'How long to wait for the database at start before giving up (exit 69). Later outages are waited out without limit' -r
complete -c persist -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c persist -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c persist -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c persist -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c persist -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c persist -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c persist -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c persist -l create-table -d 'Create the table when missing: key text primary key, payload jsonb not null, meta jsonb, version (--version-type), first_seen and updated_at timestamptz, plus the --column columns (which then need a type)'
complete -c persist -l keep-meta -d 'Keep the metadata field inside `payload` too (it is always stored in `meta`)'
complete -c persist -l emit -d 'Write every event of a committed batch to stdout once its transaction has committed: stored ones, unchanged ones, and those superseded in their batch by a later event of the same key (the summary counts the same events as "out")'
complete -c persist -l show -d 'Print the table\'s rows as NDJSON on stdout (ordered by key, every column) and exit, instead of loading: a quick look at what runs stored, in SQLite too'
complete -c persist -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c persist -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c persist -s h -l help -d 'Print help (see more with \'--help\')'
complete -c persist -s V -l version -d 'Print version'
