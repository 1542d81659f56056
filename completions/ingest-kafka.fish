complete -c ingest-kafka -l brokers -d 'Bootstrap brokers, host:port[,host:port...]' -r
complete -c ingest-kafka -l topic -d 'Topic to read; repeatable' -r
complete -c ingest-kafka -l group -d 'Consumer group: the group\'s members share the partitions, moved incrementally when members come and go (cooperative-sticky; every member of a group must use the same `-X partition.assignment.strategy`). Without it, every partition of the topics is assigned to this process' -r
complete -c ingest-kafka -s X -d 'A librdkafka setting, KEY=VALUE (kcat\'s -X); repeatable. Overrides ours. For SASL over TLS, as an example: -X security.protocol=SASL_SSL -X sasl.mechanisms=SCRAM-SHA-512 -X sasl.username=U -X sasl.password=P' -r
complete -c ingest-kafka -l offset -d 'Where to start in partitions with no stored position: beginning, end, stored (the group\'s committed offset, else beginning), an offset N, -N (N before the end), or @MS (the first message at or after unix time MS) [default: stored with --group, else beginning]' -r
complete -c ingest-kafka -l max-messages -d 'Stop after N messages (dead letters included)' -r
complete -c ingest-kafka -l format -d 'Output format: events (payload with the metadata field) or kcat\'s -J envelope' -r -f -a "events\t'The payload object with the metadata field added'
kcat\t'kcat -J: {"topic","partition","offset","tstype","ts","broker","headers","key","payload"}'"
complete -c ingest-kafka -l offsets-from -d 'Exactly-once mode: start every assigned partition at the next_offset stored in this PostgreSQL database\'s offsets table (written by persist), and fence old owners with an epoch. Needs --group or --offsets-name' -r
complete -c ingest-kafka -l offsets-table -d 'The offsets table in --offsets-from' -r
complete -c ingest-kafka -l offsets-name -d 'The name offsets are kept under without --group (plain assignment)' -r
complete -c ingest-kafka -l connect-timeout -d 'How long to wait for the brokers (and the --offsets-from database) at start before giving up with exit 69. Later outages are waited out: librdkafka reconnects' -r
complete -c ingest-kafka -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c ingest-kafka -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c ingest-kafka -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c ingest-kafka -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c ingest-kafka -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c ingest-kafka -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c ingest-kafka -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c ingest-kafka -l exit-at-end -d 'Stop once every assigned partition has reached the end it had at start'
complete -c ingest-kafka -l wrap-non-json -d 'Wrap payloads that are not JSON objects as {"value": <JSON>} or {"value_text": "<text>"} (or {"value_base64": …} when not UTF-8) instead of dead-lettering them'
complete -c ingest-kafka -l no-meta -d 'Do not add the metadata field'
complete -c ingest-kafka -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c ingest-kafka -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c ingest-kafka -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ingest-kafka -s V -l version -d 'Print version'
