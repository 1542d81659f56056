complete -c validate -l schema -d 'JSON Schema to check every event against (draft 2020-12 or draft 7, chosen by the schema\'s `$schema`; 2020-12 when absent). `format` is asserted. Compiled once' -r -F
complete -c validate -l require -d 'Fields that must be present (null counts as present), comma-separated or repeated' -r
complete -c validate -l type -d 'A field\'s JSON type, when present: string, number, integer, boolean, object, array or null (integer accepts 1.0, as JSON Schema does). Repeatable' -r
complete -c validate -l workers -d 'Batches checked at once, in parallel on one thread per core; output order is kept [default: twice the number of cores, so that a core always has a batch to work on while others wait to be sent on in order]' -r
complete -c validate -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c validate -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c validate -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c validate -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c validate -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c validate -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c validate -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c validate -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c validate -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c validate -s h -l help -d 'Print help (see more with \'--help\')'
complete -c validate -s V -l version -d 'Print version'
