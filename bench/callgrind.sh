#!/usr/bin/env bash
# Instruction counts (callgrind, all threads) of validate (quick rules, and --schema), enrich and
# `pipeline 'validate | enrich'` on the same generated events, for two builds side by
# side: what settles a difference of a few per cent that wall time on this machine
# cannot (its speed drifts by 10-50 % within minutes). Exits 1 when the new build takes
# more than MAX_PCT (default 2) per cent more instructions than the old on any of them.
#
#   OLD=/tmp/base-target/release bench/callgrind.sh           # NEW: target/release
#   EVENTS=100000 RUNS=2 OLD=… NEW=… bench/callgrind.sh
#
# Each command runs RUNS times per build (the counts of multi-threaded runs vary a
# little with scheduling); the lowest count of each is compared.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-100000}
RUNS=${RUNS:-2}
MAX_PCT=${MAX_PCT:-2}
NEW=${NEW:-target/release}
: "${OLD:?OLD=DIR: the binaries to compare against}"
command -v valgrind >/dev/null || { echo "valgrind is needed: apt-get install valgrind" >&2; exit 2; }
OUT=bench/out
mkdir -p "$OUT"
IN="$OUT/events-$EVENTS.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" > "$IN"

V=(validate --require id,type --type amount=number --type user_id=integer)
E=(enrich --set 'env="prod"' --timestamp processed_at)
# instructions DIR CMD...: the lowest instruction count of RUNS runs of DIR/CMD on $IN.
instructions() {
  local dir=$1 best='' n
  shift
  local bin=$1
  shift
  for _ in $(seq "$RUNS"); do
    n=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$dir/$bin" "$@" "$IN" \
          2>&1 >/dev/null | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1)
    if [ -z "$best" ] || (( n < best )); then best=$n; fi
  done
  echo "$best"
}

fail=0
printf '%-28s %16s %16s %8s\n' "" "old" "new" "change"
compare() { # name bin args...
  local name=$1 old new pct
  shift
  old=$(instructions "$OLD" "$@")
  new=$(instructions "$NEW" "$@")
  pct=$(awk "BEGIN { printf \"%+.2f\", ($new - $old) * 100 / $old }")
  printf '%-28s %16s %16s %7s%%' "$name" "$old" "$new" "$pct"
  if awk "BEGIN { exit !($pct > $MAX_PCT) }"; then echo "  MORE than $MAX_PCT %"; fail=1; else echo; fi
}
echo "$EVENTS events ($IN), lowest of $RUNS runs; instructions of every thread"
compare "validate" "${V[@]}"
compare "validate --schema" validate --schema bench/event.schema.json
compare "enrich" "${E[@]}"
compare "pipeline 'validate | enrich'" pipeline "${V[*]@Q} | ${E[*]@Q}"
[ "$fail" = 0 ] && echo "no command takes more than $MAX_PCT % more" || echo "MORE INSTRUCTIONS"
exit "$fail"
