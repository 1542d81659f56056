# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pipeline_global_optspecs
    string join \n f/file= explain top channel-capacity= channel-bytes= when-full= ready-window= dead-letter= max-line-bytes= meta-field= progress q/quiet shutdown-timeout= metrics-listen= otlp-endpoint= log-format= h/help V/version
end

function __fish_pipeline_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pipeline_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pipeline_using_subcommand
    set -l cmd (__fish_pipeline_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pipeline -n "__fish_pipeline_needs_command" -s f -l file -d 'Read the pipe text from PATH: `\\` continues a line, `#` starts a comment, and a new line ends a stage as `|` does. SIGHUP, or saving the file, re-reads it while the pipeline runs: new `--workers` (validate, enrich), `--connections` (persist) and channel settings take effect live; any other change is refused, with one line' -r -F
complete -c pipeline -n "__fish_pipeline_needs_command" -l channel-capacity -d 'Events each channel between two stages may hold. A batch may take it past this by at most itself' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l channel-bytes -d 'Bytes each channel may hold, whatever the size of its events: their lines and, once a stage has looked inside them, their field index. There is a channel in front of every stage: with the default, the three channels of a three-stage pipe hold 12 MiB at most' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l when-full -d 'What a full channel does: wait (back-pressure up to the source: Kafka stops fetching, HTTP answers 503, files stop being read), or drop events, counted and kept as dead letters of kind `dropped`' -r -f -a "block\t'Wait for room: back-pressure all the way to the source'
drop-oldest\t'Drop the oldest queued events to make room for new ones'
drop-newest\t'Drop new events while the channel is full'"
complete -c pipeline -n "__fish_pipeline_needs_command" -l ready-window -d '/ready answers 503 once a channel has been more than 80 % full this long without a break (or at once while a database does not answer)' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l dead-letter -d 'Append rejected records to PATH as NDJSON, one record per reject, with the stage, reason, line, source, the raw input (first 8 KiB) and the metadata field. `-` means stderr. Several stages may share one file. Without it, rejects are counted, summarised on stderr, and the exit code is 65' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l max-line-bytes -d 'Longest accepted input line, without its line ending. Longer lines become dead letters; they are never held in memory whole. Accepts K, M, G suffixes (powers of 1024)' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l meta-field -d 'Name of the reserved top-level field holding origin metadata (source, topic, partition, offset, ...). Stages pass it through untouched; validation and jq never see it' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l shutdown-timeout -d 'How long the first SIGINT/SIGTERM may take to end the run. A command reading a pipe reads on to its end within this time (the command before it in the pipe got the signal too, and is writing out what it holds); ingest-http writes out what it has queued. What is still unwritten or unread then is reported (exit 74 for events a source had acknowledged). A second signal exits at once (130)' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l metrics-listen -d 'Serve GET /metrics (Prometheus text), /ready and /health on ADDR (such as 127.0.0.1:9598), with the same names in a command and in `pipeline`. /ready is 503 while shutting down, while a database written to does not answer, or while an enrich lookup\'s circuit breaker is open. Off by default' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l otlp-endpoint -d 'Export traces over OTLP/HTTP (protobuf) to the collector at URL (Jaeger, Tempo, the OpenTelemetry Collector; `/v1/traces` is added): one span per batch per stage, with its events, rejects and bytes; a W3C traceparent from Kafka headers or an HTTP request is continued. Sampling follows OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. Off by default' -r
complete -c pipeline -n "__fish_pipeline_needs_command" -l log-format -d 'Format of log lines on stderr. The level is set with NDPIPE_LOG (default: info)' -r -f -a "text\t''
json\t''"
complete -c pipeline -n "__fish_pipeline_needs_command" -l explain -d 'Print the stages with their effective settings (workers, channels, batch sizes, database, acknowledgements) and exit, touching no input, database or broker'
complete -c pipeline -n "__fish_pipeline_needs_command" -l top -d 'Show a live view of every stage on the terminal while the pipeline runs, instead of progress lines: rate in and out, rejects, channel fill, batch time, persist\'s commits, Kafka lag. Redrawn every second on stderr (stdout stays data); q ends the run as the first Ctrl-C would. Needs a terminal; no colour with NO_COLOR'
complete -c pipeline -n "__fish_pipeline_needs_command" -l progress -d 'Show a progress line on stderr even when stderr is not a terminal'
complete -c pipeline -n "__fish_pipeline_needs_command" -s q -l quiet -d 'Print only errors on stderr: no progress line, no summary, no info logs'
complete -c pipeline -n "__fish_pipeline_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipeline -n "__fish_pipeline_needs_command" -s V -l version -d 'Print version'
complete -c pipeline -n "__fish_pipeline_needs_command" -a "top" -d 'Show the live view of `--top` for a command or pipeline already running with `--metrics-listen ADDR` (here or across SSH), until q'
complete -c pipeline -n "__fish_pipeline_needs_command" -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pipeline -n "__fish_pipeline_using_subcommand top" -s h -l help -d 'Print help'
complete -c pipeline -n "__fish_pipeline_using_subcommand help; and not __fish_seen_subcommand_from top help" -f -a "top" -d 'Show the live view of `--top` for a command or pipeline already running with `--metrics-listen ADDR` (here or across SSH), until q'
complete -c pipeline -n "__fish_pipeline_using_subcommand help; and not __fish_seen_subcommand_from top help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
