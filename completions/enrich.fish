complete -c enrich -l set -d 'Set FIELD to a JSON value, replacing it in place when present (strings need JSON quotes: env=\'"prod"\'). Repeatable; applied in order' -r
complete -c enrich -l timestamp -d 'Set FIELD to the processing time, RFC 3339 in UTC with microseconds' -r
complete -c enrich -l id -d 'Set FIELD to a deterministic id computed from the --id-from fields: the lowercase hex SHA-256 of their values as a canonical JSON array (no spaces, object keys sorted, numbers as printed by serde_json). An event missing one of them is rejected' -r
complete -c enrich -l id-from -d 'The fields the --id is computed from, comma-separated, in this order' -r
complete -c enrich -l lookup -d 'Reference table to join, loaded once: CSV with a header row (TSV for .tsv), or NDJSON objects (.ndjson, .jsonl, or content starting with `{`). Events without a matching row pass unchanged; of duplicate keys in the table the last row wins' -r -F
complete -c enrich -l on -d 'The join key: the event field, and the table column when named differently (user.id=id). Strings match by value, numbers by their text' -r
complete -c enrich -l prefix -d 'Prefix for the joined fields\' names; ending it with a dot nests them (user.)' -r
complete -c enrich -l jq -d 'A jq program (jaq dialect) run on each event without its metadata field. No output drops the event; several outputs become several events, in order. Every output must be an object' -r
complete -c enrich -l jq-timeout -d 'The longest the jq program may run on one event; past it the event is a dead letter (kind jq). Programs run in helper processes, so a runaway one (or one that recurses too deep) costs its event only' -r
complete -c enrich -l jq-max-outputs -d 'The most outputs the jq program may give for one event; past it the event is a dead letter (kind jq)' -r
complete -c enrich -l workers -d 'Batches enriched at once, in parallel on one thread per core (with --jq, on threads of their own, which wait for jq); output order is kept [default: twice the number of cores, so that a core always has a batch to work on while others wait to be sent on in order]' -r
complete -c enrich -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c enrich -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c enrich -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c enrich -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c enrich -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c enrich -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c enrich -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c enrich -s h -l help -d 'Print help (see more with \'--help\')'
complete -c enrich -s V -l version -d 'Print version'
