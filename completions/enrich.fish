complete -c enrich -l set -d 'Set FIELD to a JSON value, replacing it in place when present (strings need JSON quotes: env=\'"prod"\'). Repeatable; applied in order' -r
complete -c enrich -l timestamp -d 'Set FIELD to the processing time, RFC 3339 in UTC with microseconds' -r
complete -c enrich -l id -d 'Set FIELD to a deterministic id computed from the --id-from fields: the lowercase hex SHA-256 of their values as a canonical JSON array (no spaces, object keys sorted, numbers as printed by serde_json). An event missing one of them is rejected' -r
complete -c enrich -l id-from -d 'The fields the --id is computed from, comma-separated, in this order' -r
complete -c enrich -l lookup -d 'Reference table to join, loaded once: CSV with a header row (TSV for .tsv), or NDJSON objects (.ndjson, .jsonl, or content starting with `{`). Events without a matching row pass unchanged; of duplicate keys in the table the last row wins' -r -F
complete -c enrich -l on -d 'The join key: the event field, and the table column when named differently (user.id=id). Strings match by value, numbers by their text' -r
complete -c enrich -l prefix -d 'Prefix for the joined fields\' names; ending it with a dot nests them (user.)' -r
complete -c enrich -l jq -d 'A jq program (jaq dialect) run on each event without its metadata field. No output drops the event; several outputs become several events, in order. Every output must be an object. Programs built only from assignments and updates of keys (= |= += -= *= /= %= //=), del, object and array constructors (one key\'s value may be .a[]: an object per element), E as $x | …, .a[] as $x | … (an output per element), select, if/elif/else, comparisons, and/or/not, arithmetic, //, string interpolation, pipes, and floor, round, ceil, tostring, tonumber, length, ascii_downcase, ascii_upcase, has, split, join, test("literal regex"), empty run on the event\'s text in the worker (the fast path, 5-10x faster); any other program runs in jaq. Both give the same bytes; pipeline --explain says which path a program takes, and why' -r
complete -c enrich -l jq-timeout -d 'The longest the jq program may run on one event; past it the event is a dead letter (kind jq). Programs run in helper processes, so a runaway one (or one that recurses too deep) costs its event only' -r
complete -c enrich -l jq-max-outputs -d 'The most outputs the jq program may give for one event; past it the event is a dead letter (kind jq)' -r
complete -c enrich -l workers -d 'Batches enriched at once, in parallel on one thread per core (with --jq, on threads of their own, which wait for jq); output order is kept [default: twice the number of cores, so that a core always has a batch to work on while others wait to be sent on in order]' -r
complete -c enrich -l http -d 'For each event, call URL and set --into to the JSON answer. `{path}` is replaced by the event\'s field, percent-encoded (https://svc/users/{user_id}); an event without the field is a dead letter (kind missing_field). A proxy named by HTTP_PROXY, HTTPS_PROXY or ALL_PROXY is used (NO_PROXY\'s hosts excepted); a redirect is not followed' -r
complete -c enrich -l sql -d 'For each event, run QUERY in PostgreSQL as a prepared statement, `$1`, `$2`, … being the --sql-args fields, and set --into to its first row as an object (--sql-rows all: every row, in an array). No row is not found (--not-found). The database: --database-url, DATABASE_URL or the PG* variables, as persist takes them' -r
complete -c enrich -l sql-args -d 'The event fields bound to $1, $2, … of --sql, comma-separated, in order; each in text form, read as the type the query gives it (a JSON null is NULL). An event without one is a dead letter (kind missing_field)' -r
complete -c enrich -l sql-rows -d 'Which rows of --sql make the answer' -r -f -a "first\t'The first row, as an object'
all\t'Every row, as an array of objects'"
complete -c enrich -l database-url -d 'The PostgreSQL of --sql: a URL (postgres://user:pass@host:port/db?sslmode=require) or libpq key=value pairs' -r
complete -c enrich -l into -d 'Where the answer goes: a field path, set as --set sets (the rest of the event keeps its bytes)' -r
complete -c enrich -l http-method -d 'The method of the call' -r
complete -c enrich -l http-body -d 'A JSON body to send (Content-Type: application/json); `{path}` is replaced by the field\'s JSON value: \'{"ids": [{user_id}]}\'' -r
complete -c enrich -l header -d 'A header sent with every call, \'Name: value\'; $VAR and ${VAR} are taken from the environment (\'Authorization: Bearer $TOKEN\'). Repeatable. Credentials never show in --explain or logs' -r
complete -c enrich -l http-select -d 'Keep only this part of the answer (a field path into it; null when absent)' -r
complete -c enrich -l http-ca -d 'PEM certificates to trust for HTTPS besides the system\'s' -r -F
complete -c enrich -l not-found -d 'What a not-found answer (an HTTP 404, no row for --sql) does: dlq (a dead letter, kind enrich_http or enrich_sql), or null (the field is set to null)' -r -f -a "dlq\t'The event is a dead letter'
null\t'The field is set to null'"
complete -c enrich -l on-failure -d 'What a failed lookup (after its retries) does: dlq, pass, or block' -r -f -a "dlq\t'The event is a dead letter (kind enrich_http or enrich_sql, or circuit_open while the breaker is open), with the status or error'
pass\t'The event goes on without the field; `_meta.enrich_failed` says why'
block\t'The event waits for the service, retried without end: back-pressure instead of loss. A 4xx other than 429 still makes a dead letter (asking again will not help), and after a shutdown signal a failure does too, so that the run can end'"
complete -c enrich -l concurrency -d 'Calls in flight at once across the stage, or auto: grown while the service\'s latency holds, halved when it rises or the service answers 429 or 503' -r
complete -c enrich -l timeout -d 'The longest one call may take, from connecting to the last byte of its answer' -r
complete -c enrich -l retries -d 'Calls again after no connection, a timeout, a 5xx or a 429 (a 429\'s or 503\'s Retry-After is honoured), or a database shutting down or overloaded, waiting 100 ms, 200 ms, … up to 5 s, each wait jittered. Other 4xx answers and other SQL errors are not retried' -r
complete -c enrich -l breaker-failures -d 'Consecutive failed calls that open the circuit breaker of a service (per host, or the database): while open, no call is made' -r
complete -c enrich -l breaker-rate -d 'The share of failed calls (0 to 1) over --breaker-window that opens the breaker too (counted once 20 calls were made in the window)' -r
complete -c enrich -l breaker-window -d 'The window of --breaker-rate' -r
complete -c enrich -l breaker-cooldown -d 'How long an open breaker makes no call; then one probe call is made (half-open), and its success closes the breaker' -r
complete -c enrich -l cache-size -d 'Keep up to N answers (least recently used out first); 0 keeps none. Calls for the same request are shared while out, kept or not' -r
complete -c enrich -l cache-ttl -d 'How long a kept answer is used' -r
complete -c enrich -l negative-ttl -d 'How long a kept not-found answer is used' -r
complete -c enrich -l rate-limit -d 'At most N calls per second across the stage (N/s, or N/m), a token bucket that lets a burst of one second\'s calls through' -r
complete -c enrich -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c enrich -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c enrich -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c enrich -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c enrich -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c enrich -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c enrich -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c enrich -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c enrich -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c enrich -s h -l help -d 'Print help (see more with \'--help\')'
complete -c enrich -s V -l version -d 'Print version'
