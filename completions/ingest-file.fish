complete -c ingest-file -l poll -d 'Look for changes every INTERVAL instead of asking the kernel for change events (for NFS, SMB and other filesystems that send none)' -r
complete -c ingest-file -l order -d 'The order files are read in: mtime (oldest modified first) or name' -r -f -a "mtime\t'Oldest modification time first (rotated files before the live one)'
name\t'By path'"
complete -c ingest-file -l from -d 'Where to start in a file seen for the first time (no stored position): beginning, or end (only lines appended from now on). Files that appear while following are always read from their beginning' -r -f -a "beginning\t''
end\t''"
complete -c ingest-file -l rotate-wait -d 'How long a rotated or deleted file is read on for lines still being written to it, and how long a file shorter than --fingerprint-bytes must stay unchanged before it is identified and read' -r
complete -c ingest-file -l fingerprint-bytes -d 'How many first bytes of a file its identity covers (with its device and inode)' -r
complete -c ingest-file -l exit-when-idle -d 'End a --follow run once no file has changed for DURATION (exit 0): a backfill of a directory still being written' -r
complete -c ingest-file -l positions -d 'Keep read positions in FILE: written atomically (write, fsync, rename) at most every second once the lines before them are written to stdout (in `pipeline`: once the last stage has handled them). After a crash, lines since the last checkpoint are read again; none is skipped' -r -F
complete -c ingest-file -l forget-after -d 'Drop a file\'s entry from --positions once the file has been gone this long' -r
complete -c ingest-file -l positions-from -d 'Exactly-once mode: positions live in this PostgreSQL database\'s offsets table, where persist commits each file\'s next offset in the same transaction as its rows. Each file is claimed with a new epoch, so a second reader of the same name fences the first. Needs --positions-name' -r
complete -c ingest-file -l positions-name -d 'The name positions are kept under in --positions-from (one per reader)' -r
complete -c ingest-file -l positions-table -d 'The offsets table in --positions-from (persist\'s --offsets-table)' -r
complete -c ingest-file -l connect-timeout -d 'How long to wait for the --positions-from database at start before giving up with exit 69' -r
complete -c ingest-file -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c ingest-file -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c ingest-file -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c ingest-file -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c ingest-file -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c ingest-file -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c ingest-file -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c ingest-file -l follow -d 'Keep running: read lines appended to the files, files that appear and match, and the end of rotated files; notice truncation and deletion. Without it: read every match once and exit 0 at the end'
complete -c ingest-file -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c ingest-file -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c ingest-file -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ingest-file -s V -l version -d 'Print version'
