#!/usr/bin/env bash
# Scaling out (reported, not a gate): the README's loaders.pipe ("More than one machine") on
# simulated hosts in one consumer group — scripts/cluster-sim: network namespaces, one
# Kafka broker, one PostgreSQL; needs root. Every host shares this machine's 2 cores, so
# throughput cannot grow with hosts here; what it measures is what scales:
#  1. For 1, 2 and 3 hosts (a fresh cluster each): EVENTS events (default 1 M) produced as
#     fast as the broker takes them into the 12-partition topic once the group has settled.
#     Reports events/s from the first commit to the last, and the CPU seconds (user +
#     system) the hosts' processes spent per 1 M events: whether N hosts cost more than
#     one for the same work.
#  2. Coordination: RATE events/s (default 10,000) while hosts join one at a time
#     (1 → 4) and then leave one at a time with SIGTERM (4 → 1), STEP seconds apart
#     (default 8). Per change: the rebalance time (from the change to the last claim it
#     caused), the longest time one partition went without a commit, and the events
#     fenced (read by an owner after its partition moved; the new owner reads them again).
#
#   sudo bench/scale.sh
#   EVENTS=200000 RATE=5000 bench/scale.sh
#   EXTRA='-X partition.assignment.strategy=range' bench/scale.sh   # appended to ingest-kafka
# PROFILE=release (default) or dist picks the build measured; SKIP_BUILD=1 uses it as built.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
RATE=${RATE:-10000}
STEP=${STEP:-8}
PROFILE=${PROFILE:-release}
EXTRA=${EXTRA:-}
OUT=bench/out
mkdir -p "$OUT"
source bench/lib.sh
[ "$(id -u)" = 0 ] || { echo "bench/scale.sh needs root (network namespaces)" >&2; exit 1; }
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" --quiet --bin pipeline --bin persist --example kafka_produce
BIN=$PWD/target/$PROFILE
IN="$OUT/events-$EVENTS.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" > "$IN"

# The pipe file, as the README shows it (EXTRA appended to ingest-kafka's line).
PIPE=$OUT/scale-loaders.pipe
awk '/^## More than one machine/ { s = 1 } s && /^```text/ { b = 1; next } b && /^```/ { exit } b' README.md \
  | sed "s|^  --offsets-from \"\$DATABASE_URL\" -X session.timeout.ms=6000$|& $EXTRA|" > "$PIPE"
grep -q '^ingest-kafka' "$PIPE" || { echo "no loaders.pipe in README.md" >&2; exit 1; }

SIM=scripts/cluster-sim
NAME=scale$$
STATE= KAFKA= DB=
declare -A PID
cleanup() { $SIM down "$NAME" >/dev/null 2>&1 || true; }
trap cleanup EXIT

sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -h "$STATE/pg" -U postgres -d test -c "$1"; }
cpu_secs() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
now() { sql "SELECT extract(epoch FROM clock_timestamp())"; }
addr() { echo "127.77.0.$((10 + ${1#h}))"; }   # scripts/cluster-sim's plan

up() {
  local info
  info=$($SIM up "$NAME" "$@" 2>"$OUT/scale-sim.log") || { cat "$OUT/scale-sim.log" >&2; exit 1; }
  STATE=$(sed -n 's/^STATE=//p' <<<"$info")
  KAFKA=$(sed -n 's/^KAFKA=//p' <<<"$info")
  DB=$(sed -n 's/^DATABASE_URL=//p' <<<"$info")
  $SIM exec "$NAME" client "$BIN/examples/kafka_produce" "$KAFKA" orders 12 </dev/null
  $SIM exec "$NAME" h1 env DATABASE_URL="$DB" \
    "$BIN/persist" -q --create-table --version-field meta.seq </dev/null
}
down() { $SIM down "$NAME" >/dev/null; PID=(); }

start_host() {
  local h=$1
  $SIM exec "$NAME" "$h" env KAFKA_BROKERS="$KAFKA" DATABASE_URL="$DB" \
    "$BIN/pipeline" --file "$PIPE" --metrics-listen "$(addr "$h"):9100" \
    </dev/null >/dev/null 2>>"$OUT/scale-$h.log" &
  PID[$h]=$!
}

# Waits until every partition is owned and no claim has happened for 2 s.
settled() {
  local last= cur same=0
  for _ in $(seq 600); do
    cur=$(sql "SELECT count(*) || ':' || coalesce(sum(epoch), 0) FROM ndpipe_offsets" 2>/dev/null || echo none)
    if [ "${cur%%:*}" = 12 ] && [ "$cur" = "$last" ]; then
      same=$((same + 1)); [ $same -ge 20 ] && return 0
    else
      same=0
    fi
    last=$cur; sleep 0.1
  done
  echo "the group did not settle" >&2; exit 1
}

committed() { sql "SELECT coalesce(sum(greatest(next_offset, 0)), 0) FROM ndpipe_offsets"; }
wait_committed() {
  for _ in $(seq 3000); do [ "$(committed)" -ge "$1" ] && return 0; sleep 0.1; done
  echo "only $(committed) of $1 committed" >&2; exit 1
}

metric_fenced() {
  $SIM exec "$NAME" client curl -sf "http://$(addr "$1"):9100/metrics" \
    | awk '/^ndpipe_persist_rows_total\{.*outcome="fenced"/ { print $2 }' | head -1
}
summary_fenced() { grep -o '[0-9,]* fenced' "$OUT/scale-$1.log" | tail -1 | tr -d , | cut -d' ' -f1; }

stop_host() {
  local h=$1
  kill -TERM "${PID[$h]}"
  wait "${PID[$h]}" || { echo "$h exited with $?" >&2; tail -5 "$OUT/scale-$h.log" >&2; exit 1; }
  unset "PID[$h]"
}

echo "== 1. the same $EVENTS events on 1, 2 and 3 hosts (one cluster each; the 2 cores shared)"
printf '%-6s %12s %16s\n' hosts 'events/s' 'CPU s per 1 M'
for n in 1 2 3; do
  hosts=(); for i in $(seq "$n"); do hosts+=("h$i"); done
  rm -f "$OUT"/scale-h*.log
  up "${hosts[@]}"
  for h in "${hosts[@]}"; do start_host "$h"; done
  settled
  $SIM audit "$NAME" 2>/dev/null
  cpu0=0; for h in "${hosts[@]}"; do cpu0=$(calc "$cpu0 + $(cpu_secs "${PID[$h]}")"); done
  $SIM exec "$NAME" client "$BIN/examples/kafka_produce" "$KAFKA" orders 12 < "$IN"
  wait_committed "$EVENTS"
  cpu1=0; for h in "${hosts[@]}"; do cpu1=$(calc "$cpu1 + $(cpu_secs "${PID[$h]}")"); done
  span=$(sql "SELECT extract(epoch FROM max(at) - min(at)) FROM ndpipe_offsets_log WHERE to_offset > from_offset")
  printf '%-6s %12.0f %16.2f\n' "$n" "$(calc "$EVENTS / $span")" "$(calc "($cpu1 - $cpu0) * 1000000 / $EVENTS")"
  for h in "${hosts[@]}"; do stop_host "$h"; done
  down
done

echo
echo "== 2. hosts joining and leaving under $RATE events/s, $STEP s apart"
rm -f "$OUT"/scale-h*.log
up h1 h2 h3 h4
changes=(+h2 +h3 +h4 -h4 -h3 -h2)
total=$((RATE * STEP * (${#changes[@]} + 2)))
[ "$total" -le "$(wc -l < "$IN")" ] || { echo "EVENTS=$EVENTS is too few for RATE=$RATE; raise EVENTS" >&2; exit 1; }
start_host h1
settled
$SIM audit "$NAME" 2>/dev/null
head -n "$total" "$IN" | $SIM exec "$NAME" client "$BIN/examples/kafka_produce" "$KAFKA" orders 12 "$RATE" &
producer=$!
sleep "$STEP"
declare -a at fenced_before
fenced_total() {
  local sum=0 h f
  for h in "${!PID[@]}"; do f=$(metric_fenced "$h"); f=${f:-0}; sum=$((sum + ${f%.*})); done
  for h in $GONE; do f=$(summary_fenced "$h"); sum=$((sum + ${f:-0})); done
  echo "$sum"
}
GONE=
for i in "${!changes[@]}"; do
  c=${changes[$i]} h=${changes[$i]:1}
  fenced_before[i]=$(fenced_total)
  at[i]=$(now)
  if [ "${c:0:1}" = + ]; then start_host "$h"; else stop_host "$h"; GONE="$GONE $h"; fi
  sleep "$STEP"
done
wait "$producer"
wait_committed "$total"
at[${#changes[@]}]=$(now)
fenced_before[${#changes[@]}]=$(fenced_total)
printf '%-8s %14s %22s %8s\n' change 'rebalance s' 'longest gap, 1 part. s' fenced
for i in "${!changes[@]}"; do
  from=${at[i]} to=${at[i + 1]}
  row=$(sql "WITH w AS (SELECT * FROM ndpipe_offsets_log WHERE at >= to_timestamp($from) AND at < to_timestamp($to)),
      claims AS (SELECT max(at) AS last FROM w WHERE epoch <> old_epoch),
      gaps AS (SELECT max(g) AS g FROM (SELECT at - lag(at) OVER (PARTITION BY \"partition\" ORDER BY at) AS g
               FROM ndpipe_offsets_log WHERE to_offset > from_offset
               AND at >= to_timestamp($from) - interval '2 seconds' AND at < to_timestamp($to)) x)
    SELECT coalesce(extract(epoch FROM claims.last) - $from, 0), coalesce(extract(epoch FROM gaps.g), 0)
    FROM claims, gaps")
  printf '%-8s %14.2f %22.2f %8d\n' "${changes[$i]}" "${row%%|*}" "${row##*|}" \
    $((fenced_before[i + 1] - fenced_before[i]))
done
for h in "${!PID[@]}"; do stop_host "$h"; done
echo "(pipe file: $PIPE; hosts' logs: $OUT/scale-h*.log)"
