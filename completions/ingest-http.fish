complete -c ingest-http -l listen -d 'Address to listen on (port 0 picks a free port; the address is logged)' -r
complete -c ingest-http -l max-body-bytes -d 'Largest request body accepted, as sent (larger: 413). K, M, G suffixes' -r
complete -c ingest-http -l max-decompressed-bytes -d 'Largest body after gzip inflation (larger: 413)' -r
complete -c ingest-http -l queue-capacity -d 'Events the queue holds between the server and stdout' -r
complete -c ingest-http -l queue-bytes -d 'Bytes of events the queue holds between the server and stdout' -r
complete -c ingest-http -l max-inflight-bytes -d 'Bytes of request bodies being received and parsed at once; a request waits for its share (its Content-Length, else --max-body-bytes) like it waits for queue room' -r
complete -c ingest-http -l enqueue-timeout -d 'How long a request waits for room before it gets 503 with Retry-After' -r
complete -c ingest-http -l max-open-requests -d 'Requests handled at once; more are shed at once with 503 and Retry-After' -r
complete -c ingest-http -l ack -d 'When to answer: once the events are queued (202), or once they are written to stdout (200)' -r -f -a "queued\t'Once the events are in the queue (202 Accepted)'
written\t'Once the events have been written to stdout (200 OK)'"
complete -c ingest-http -l auth-token -d 'Require `Authorization: Bearer TOKEN` (compared in constant time)' -r
complete -c ingest-http -l auth-token-file -d 'Read the bearer token from a file (surrounding whitespace ignored)' -r -F
complete -c ingest-http -l shutdown-timeout -d 'On SIGTERM/SIGINT, how long to wait for queued events to be written; events still queued then are counted and logged as lost (exit 74)' -r
complete -c ingest-http -l tls-cert -d 'Serve HTTPS with this certificate chain (PEM); needs --tls-key' -r -F
complete -c ingest-http -l tls-key -d 'The private key (PEM) for --tls-cert' -r -F
complete -c ingest-http -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c ingest-http -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c ingest-http -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c ingest-http -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c ingest-http -l all-or-nothing -d 'Refuse the whole request (400) when any event in it is malformed'
complete -c ingest-http -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c ingest-http -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c ingest-http -s h -l help -d 'Print help (see more with \'--help\')'
complete -c ingest-http -s V -l version -d 'Print version'
