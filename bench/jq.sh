#!/usr/bin/env bash
# enrich --jq against #29's goals, peers in the same run, best of RUNS interleaved:
# - `enrich --jq` with a three-assignment program (the fast path: edits on the event's
#   text) — goal >= 1 M events/s and >= 8x seedgo (../shared/peers/seedgo, the Go channel
#   design: its validation and its two added fields, amount_cents and ingested_at);
# - `validate | enrich --jq …` as a shell pipe — goal >= 8x seedgo;
# - the same program on the jaq path (`def f: PROGRAM; f`, which the fast path does not
#   take: the cost without it) and jq itself, for scale.
# Before timing, the fast path's output is compared with the jaq path's byte for byte.
#
#   bench/jq.sh                  # 1 M events from ../shared/tools/gen_events.py
#   EVENTS=200000 RUNS=1 bench/jq.sh
#
# PROFILE (default release) picks the build; SKIP_BUILD=1 measures what is built.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
bench_init release
BIN=target/$PROFILE
IN="$OUT/events-$EVENTS.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" > "$IN"

PROGRAM='.amount_cents = ((.amount * 100) | floor) | .tag = (.user_id | tostring) + "-t" | .big = (.amount > 50)'
VALIDATE="$BIN/validate --require id --type amount=number"

"$BIN/enrich" --jq "$PROGRAM" "$IN" > "$OUT/jq-fast.ndjson"
"$BIN/enrich" --jq "def f: $PROGRAM; f" "$IN" > "$OUT/jq-jaq.ndjson"
cmp "$OUT/jq-fast.ndjson" "$OUT/jq-jaq.ndjson" || { echo "the fast path's output differs from jaq's" >&2; exit 2; }
echo "fast path output = jaq path output ($(wc -l < "$OUT/jq-fast.ndjson") lines, byte for byte)"
(cd ../shared/peers/seedgo && go build -o "$OLDPWD/$OUT/seedgo-bin" .)

declare -A CMD BEST
NAMES=(fast pipe seedgo)
CMD[fast]="$BIN/enrich --jq '$PROGRAM' $IN"
CMD[pipe]="$VALIDATE $IN | $BIN/enrich --jq '$PROGRAM'"
CMD[seedgo]="$OUT/seedgo-bin < $IN"
# The slow ones once: they take seconds each.
best() { local t0 t1; t0=$(date +%s.%N); bash -c "$1" > /dev/null; t1=$(date +%s.%N); calc "$t1 - $t0"; }
for _ in $(seq "$RUNS"); do
  for n in "${NAMES[@]}"; do
    s=$(best "${CMD[$n]}")
    if [ -z "${BEST[$n]:-}" ] || holds "$s < ${BEST[$n]}"; then BEST[$n]=$s; fi
  done
done
BEST[jaq]=$(best "$BIN/enrich --jq 'def f: $PROGRAM; f' $IN")
BEST[jq]=$(best "jq -c '$PROGRAM' $IN")

rate() { calc "$EVENTS / ${BEST[$1]}"; }
fail=0
line() { # name label [goal-check]
  printf '%-46s %10.0f ev/s  %6.2f s\n' "$2" "$(rate "$1")" "${BEST[$1]}"
}
echo "input: $IN ($EVENTS events), best of $RUNS interleaved, $(nproc) cores"
line fast "enrich --jq (fast path)"
line pipe "validate | enrich --jq (shell pipe)"
line jaq "enrich --jq, jaq path (def f: …; f)"
line jq "peer: jq -c (same program)"
line seedgo "peer: seedgo, the Go channel design"
check() { # what value goal
  if holds "$2 >= $3"; then v=ok; else v=MISSED; fail=1; fi
  printf '  %-44s %8.2f  (goal >= %s) %s\n' "$1" "$2" "$3" "$v"
}
check "enrich --jq, M events/s" "$(calc "$(rate fast) / 1000000")" 1
check "enrich --jq / seedgo" "$(calc "$(rate fast) / $(rate seedgo)")" 8
check "validate | enrich --jq / seedgo" "$(calc "$(rate pipe) / $(rate seedgo)")" 8
printf '  %-44s %8.2f\n' "fast path / jaq path" "$(calc "$(rate fast) / $(rate jaq)")"
printf '  %-44s %8.2f\n' "fast path / jq" "$(calc "$(rate fast) / $(rate jq)")"
exit $fail
