#!/usr/bin/env bash
# Benchmarks validate and enrich against the goals of the foundation issue, with jq as
# the peer, in the same run. Exits 1 when a goal is missed. Also reports, for the shell
# pipe `validate | enrich`, the ratio to Benthos (bench/benthos.yaml: the same checks and
# added fields, stdin to stdout) and to ../shared/peers/seedgo, the Go channel design
# ndpipe replaces (its own checks: id a non-empty string, amount a number >= 0; its own
# fields: ingested_at and amount_cents; output order not kept).
# Benthos v4.60.0 (MIT core, cmd/benthos) is built once with go (pinned with go get in a
# throw-away module) into ~/.cache/ndpipe/benthos-v4.60.0 (a few minutes); seedgo into
# bench/out.
#
#   bench/stages.sh            # 1 M events from ../shared/tools/gen_events.py
#   EVENTS=200000 bench/stages.sh
#
# Prints events/s, the ratio to the goal or peer, and peak RSS of each command.
# PROFILE=dist (default: fat LTO, as release artifacts are built) or PROFILE=release
# (the profile `cargo install` and scripts/demo use) picks the build measured; BIN=DIR
# (with SKIP_BUILD=1) measures binaries built elsewhere (an older commit, say).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init dist
BIN=${BIN:-target/$PROFILE}
IN="$OUT/events-$EVENTS.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" > "$IN"
IN3="$OUT/events-${EVENTS}x3.ndjson"
[ -s "$IN3" ] || cat "$IN" "$IN" "$IN" > "$IN3"
command -v jq >/dev/null || { echo "jq is needed for the comparison: apt-get install jq" >&2; exit 2; }

SCHEMA=bench/event.schema.json
JQ_FILTER='select(type == "object" and has("id") and has("type") and has("amount")
  and (.id | type) == "string" and (.amount | type) == "number" and .amount >= 0
  and ((has("currency") | not) or (.currency as $c | ["USD","EUR","GBP","JPY","CHF"] | index($c)) != null)
  and ((has("user_id") | not) or ((.user_id | type) == "number" and .user_id == (.user_id | floor))))'
ENRICH_ARGS=(--set 'env="prod"' --timestamp processed_at --id key --id-from id,ts)

# best_of CMD...: runs a shell command RUNS times; sets SECS (best wall time) and RSS_KB (its peak RSS).
best_of() {
  SECS=; RSS_KB=
  for _ in $(seq "$RUNS"); do
    local t0 t1 rss
    t0=$(date +%s.%N)
    rss=$( { /usr/bin/time -f %M bash -c "$1" > /dev/null; } 2>&1 | tail -1 )
    t1=$(date +%s.%N)
    local s; s=$(calc "$t1 - $t0")
    if [ -z "$SECS" ] || holds "$s < $SECS"; then SECS=$s; RSS_KB=$rss; fi
  done
}

fail=0
report() { # name goal_per_sec peer_note
  local rate; rate=$(calc "$EVENTS / $SECS")
  printf '%-44s %10.0f ev/s  %6.2f s  rss %6.1f MiB' "$1" "$rate" "$SECS" "$(calc "$RSS_KB / 1024")"
  if [ -n "${2:-}" ]; then
    if holds "$rate >= $2"; then printf '  goal %s/s ok' "$2"; else printf '  goal %s/s MISSED' "$2"; fail=1; fi
  fi
  echo
  RATE=$rate
}
rss_goal() { # name max_mib
  holds "$RSS_KB <= $2 * 1024" || { echo "  RSS goal missed: $1 used $(calc "$RSS_KB / 1024") MiB > $2 MiB"; fail=1; }
}

echo "input: $IN ($EVENTS events, $(du -mL "$IN" | cut -f1) MiB), best of $RUNS, $(nproc) cores"
best_of "cat $IN | cat"; report "ceiling: cat | cat"; CAT_RATE=$RATE

# The peer must agree with us on what passes, or the comparison means nothing.
jq_lines=$(jq -c "$JQ_FILTER" "$IN" | wc -l)
our_lines=$("$BIN/validate" --schema "$SCHEMA" "$IN" | wc -l)
[ "$jq_lines" = "$our_lines" ] || { echo "jq passes $jq_lines events, validate $our_lines: filters differ" >&2; exit 2; }
best_of "jq -c '$JQ_FILTER' $IN"; report "peer: jq -c (equivalent filter)"; JQ_RATE=$RATE

best_of "$BIN/validate --schema $SCHEMA $IN"; report "validate --schema" 1000000; rss_goal validate 32
ratio=$(calc "$RATE / $JQ_RATE")
if holds "$ratio >= 14"; then verdict=ok; else verdict=MISSED; fail=1; fi
printf '  validate --schema / jq = %.1fx (goal >= 14x) %s\n' "$ratio" "$verdict"

best_of "$BIN/validate --require id,type --type amount=number --type user_id=integer $IN"
report "validate --require --type" 2000000; rss_goal validate 32

best_of "$BIN/enrich ${ENRICH_ARGS[*]@Q} $IN"; report "enrich --set --timestamp --id" 1500000; rss_goal enrich 32

PIPE="$BIN/validate --require id --type amount=number $IN | $BIN/enrich --set 'env=\"prod\"' --timestamp processed_at"
best_of "$PIPE"; report "validate | enrich (shell pipe)" 1000000; PIPE_RATE=$RATE

# Same-job peers (no goal of this issue; the pipeline issue sets them).
if command -v go >/dev/null; then
  # Built once into ~/.cache/ndpipe/benthos-v4.60.0 (bench/lib.sh).
  benthos_build || { echo "building Benthos $BENTHOS_VERSION failed" >&2; exit 2; }
  B="$BENTHOS -c bench/benthos.yaml"
  b_lines=$($B < "$IN" | wc -l)
  p_lines=$(bash -c "$PIPE" | wc -l)
  [ "$b_lines" = "$p_lines" ] || { echo "Benthos passes $b_lines events, validate | enrich $p_lines: configs differ" >&2; exit 2; }
  best_of "$B < $IN"; report "peer: Benthos $BENTHOS_VERSION (same work)"
  printf '  validate | enrich / Benthos = %.1fx\n' "$(calc "$PIPE_RATE / $RATE")"
  (cd ../shared/peers/seedgo && go build -o "$OLDPWD/$OUT/seedgo-bin" .)
  best_of "$OUT/seedgo-bin < $IN"; report "peer: seedgo, the Go channel design"
  printf '  validate | enrich / seedgo = %.1fx (similar, not identical work: see above)\n' "$(calc "$PIPE_RATE / $RATE")"
else
  echo "no go: Benthos and seedgo skipped"
fi

# Flat memory: three times the input must not need more memory.
# Peak RSS depends on how many batches happen to be in flight at once, so one run of the
# longer input has more chances to see the worst case: compare the least of 3 runs each.
least_rss() {
  local least= rss
  for _ in 1 2 3; do
    rss=$( { /usr/bin/time -f %M bash -c "$1" > /dev/null; } 2>&1 | tail -1 )
    if [ -z "$least" ] || (( rss < least )); then least=$rss; fi
  done
  echo "$least"
}
for cmd in "validate --schema $SCHEMA" "enrich ${ENRICH_ARGS[*]@Q}"; do
  small=$(least_rss "$BIN/$cmd $IN")
  big=$(least_rss "$BIN/$cmd $IN3")
  printf '%-44s rss %.1f MiB at 1x, %.1f MiB at 3x input\n' "${cmd%% *} (flat memory)" "$(calc "$small / 1024")" "$(calc "$big / 1024")"
  (( big <= small + 4096 )) || { echo "  memory grows with input"; fail=1; }
done

# For information (no goal): the goals were set on a machine where cat | cat moved 3.6 M
# of these lines/s and jq did 71 k events/s. How fast is this one, next to it?
printf 'this machine vs the one the goals were set on: cat | cat %.2fx, jq %.2fx\n' \
  "$(calc "$CAT_RATE / 3600000")" "$(calc "$JQ_RATE / 71000")"
[ "$fail" = 0 ] && echo "all goals met" || echo "GOALS MISSED"
exit "$fail"
