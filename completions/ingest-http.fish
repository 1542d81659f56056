complete -c ingest-http -l listen -d 'Address to listen on (port 0 picks a free port; the address is logged)' -r
complete -c ingest-http -l max-body-bytes -d 'Largest request body accepted, as sent (larger: 413). K, M, G suffixes' -r
complete -c ingest-http -l max-decompressed-bytes -d 'Largest body after gzip inflation (larger: 413)' -r
complete -c ingest-http -l queue-capacity -d 'Events the queue holds between the server and stdout' -r
complete -c ingest-http -l queue-bytes -d 'Bytes of events the queue holds between the server and stdout' -r
complete -c ingest-http -l max-inflight-bytes -d 'Memory for requests being received and parsed at once: their bytes as they arrive, inflated, and made into events. A request waits for room like it waits for queue room (then 503); one that could never fit gets 413' -r
complete -c ingest-http -l body-timeout -d 'The longest a request body may take to arrive (then 408)' -r
complete -c ingest-http -l min-body-rate -d 'The slowest a request body may arrive, in bytes per second, after its first 5 seconds (then 408): an idle or trickling body does not hold a connection for long' -r
complete -c ingest-http -l enqueue-timeout -d 'How long a request waits for room before it gets 503 with Retry-After' -r
complete -c ingest-http -l max-open-requests -d 'Requests handled at once; more are shed at once with 503 and Retry-After' -r
complete -c ingest-http -l ack -d 'When to answer: once the events are queued (202), or once they are written to stdout (200)' -r -f -a "queued\t'Once the events are in the queue (202 Accepted)'
written\t'Once the events have been written to stdout (200 OK)'"
complete -c ingest-http -l auth-token -d 'Require `Authorization: Bearer TOKEN` (compared in constant time)' -r
complete -c ingest-http -l auth-token-file -d 'Read the bearer token from a file (surrounding whitespace ignored)' -r -F
complete -c ingest-http -l tls-cert -d 'Serve HTTPS with this certificate chain (PEM); needs --tls-key' -r -F
complete -c ingest-http -l tls-key -d 'The private key (PEM) for --tls-cert' -r -F
complete -c ingest-http -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c ingest-http -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c ingest-http -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c ingest-http -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c ingest-http -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c ingest-http -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c ingest-http -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c ingest-http -l all-or-nothing -d 'Refuse the whole request (400) when any event in it is malformed'
complete -c ingest-http -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c ingest-http -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c ingest-http -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ingest-http -s V -l version -d 'Print version'
