#!/usr/bin/env bash
# Benchmarks ingest-kafka against the goal of the Kafka issue, on a throw-away Apache Kafka
# broker (scripts/kafka-test-broker start) sharing the 2 cores: consume 1 M pre-produced events
# to /dev/null with the metadata field on every line, >= 5x a Python confluent-kafka
# consumer writing the same NDJSON (bench/kafka/peer.py) in the same run, peak RSS
# <= 128 MiB. Reports the broker's CPU time too. Exits 1 when a goal is missed.
# For information it also runs `bench/kafka/peer.py --splice`, a faster Python consumer that
# splices _meta into the payload text without checking the payload, and prints that ratio,
# and examples/kafka_bare.rs, a bare librdkafka consumer printing payloads only (the
# issue's "practical ceiling", 1.1 M msg/s on the machine its goals were set on), to show
# how far this machine and broker are from that one; ingest-kafka's goals against it
# (>= 90 %) and against Debian's kcat (`kcat -C -J -e`, >= 3x; fetched by bench/lib.sh's
# kcat_fetch when it is not installed) are checked too.
# ingest-kafka reads with --exit-at-end (to the high watermarks it saw at start) and must
# print exactly the events produced; the peers read that many messages.
# The bare consumer, kcat and ingest-kafka run RUNS rounds (3), interleaved, each round
# printed; the best of each is compared. The Python peers, 10x slower, run once.
#
#   bench/kafka.sh
#   EVENTS=200000 RUNS=1 bench/kafka.sh
# PROFILE=dist (default: fat LTO, as release artifacts are built) or PROFILE=release
# (the profile `cargo install` and scripts/demo use) picks the build measured.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-1000000}
RUNS=${RUNS:-3}
OUT=bench/out
mkdir -p "$OUT"
PROFILE=${PROFILE:-dist}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" --quiet --bin ingest-kafka --example kafka_produce --example kafka_bare
IN="$OUT/events-$EVENTS.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" > "$IN"
PYDEPS="$OUT/pydeps"
[ -d "$PYDEPS/confluent_kafka" ] || python3 -m pip install --quiet --target "$PYDEPS" confluent-kafka

source bench/lib.sh
cpu_secs() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }

ADDR=$(scripts/kafka-test-broker start)
trap 'scripts/kafka-test-broker stop "$ADDR" >/dev/null 2>&1 || true' EXIT
BROKER_PID=$(cat "${NDPIPE_KAFKA_STATE_DIR:-${TMPDIR:-/tmp}/ndpipe-kafka-test-broker}/${ADDR##*:}.pid")
TOPIC=bench-$$
echo "producing $EVENTS events to $TOPIC (3 partitions) on $ADDR"
target/$PROFILE/examples/kafka_produce "$ADDR" "$TOPIC" 3 < "$IN"

# timed CMD: wall seconds (SECS), peak RSS (RSS_KB), broker CPU seconds used (BROKER_CPU).
timed() {
  local t0 t1 b0 b1
  b0=$(cpu_secs "$BROKER_PID"); t0=$(date +%s.%N)
  RSS_KB=$( { /usr/bin/time -f %M bash -c "$1" > /dev/null; } 2>&1 | tail -1 )
  t1=$(date +%s.%N); b1=$(cpu_secs "$BROKER_PID")
  SECS=$(calc "$t1 - $t0"); BROKER_CPU=$(calc "$b1 - $b0")
}

timed "PYTHONPATH=$PYDEPS python3 bench/kafka/peer.py $ADDR $TOPIC $EVENTS"
peer_rate=$(calc "$EVENTS / $SECS")
printf '%-44s %9.0f msg/s  %6.2f s  broker cpu %5.1f s\n' "peer: Python confluent-kafka" "$peer_rate" "$SECS" "$BROKER_CPU"

timed "PYTHONPATH=$PYDEPS python3 bench/kafka/peer.py $ADDR $TOPIC $EVENTS --splice"
splice_rate=$(calc "$EVENTS / $SECS")
printf '%-44s %9.0f msg/s  %6.2f s  broker cpu %5.1f s\n' "peer (information): splicing, no JSON check" "$splice_rate" "$SECS" "$BROKER_CPU"

kcat_fetch || { echo "cannot fetch Debian's kcat" >&2; exit 2; }
# best NAME: keeps the best rate of NAME in BEST[NAME], its highest peak RSS in PEAK[NAME].
declare -A BEST PEAK
best() {
  local rate
  rate=$(calc "$EVENTS / $SECS")
  if [ -z "${BEST[$1]:-}" ] || holds "$rate > ${BEST[$1]}"; then BEST[$1]=$rate; fi
  if [ -z "${PEAK[$1]:-}" ] || [ "$RSS_KB" -gt "${PEAK[$1]}" ]; then PEAK[$1]=$RSS_KB; fi
}
for round in $(seq "$RUNS"); do
  timed "target/$PROFILE/examples/kafka_bare $ADDR $TOPIC $EVENTS"; best bare
  printf 'round %d: %-35s %9.0f msg/s  %6.2f s  broker cpu %5.1f s\n' "$round" "bare, payloads only" "$(calc "$EVENTS / $SECS")" "$SECS" "$BROKER_CPU"
  timed "$KCAT -q -b $ADDR -t $TOPIC -C -J -e"; best kcat
  printf 'round %d: %-35s %9.0f msg/s  %6.2f s  broker cpu %5.1f s\n' "$round" "kcat -C -J -e (Debian)" "$(calc "$EVENTS / $SECS")" "$SECS" "$BROKER_CPU"
  timed "target/$PROFILE/ingest-kafka -q --brokers $ADDR --topic $TOPIC --exit-at-end"; best ours
  printf 'round %d: %-35s %9.0f msg/s  %6.2f s  broker cpu %5.1f s  rss %.1f MiB\n' "$round" "ingest-kafka (with _meta)" "$(calc "$EVENTS / $SECS")" "$SECS" "$BROKER_CPU" "$(calc "$RSS_KB / 1024")"
done
bare_rate=${BEST[bare]}; kcat_rate=${BEST[kcat]}; ours_rate=${BEST[ours]}; RSS_KB=${PEAK[ours]}
printf '%-44s %9.0f msg/s  (best of %d)\n' "ceiling (information): bare, payloads only" "$bare_rate" "$RUNS"
printf '%-44s %9.0f msg/s  (best of %d)\n' "peer: kcat -C -J -e (Debian)" "$kcat_rate" "$RUNS"
lines=$(target/$PROFILE/ingest-kafka -q --brokers "$ADDR" --topic "$TOPIC" --exit-at-end | wc -l)
ratio=$(calc "$ours_rate / $peer_rate")
printf '%-44s %9.0f msg/s  (best of %d)  peak rss %.1f MiB  %.2fx the Python peer\n' \
  "ingest-kafka (with _meta)" "$ours_rate" "$RUNS" "$(calc "$RSS_KB / 1024")" "$ratio"
printf '%-44s %.2fx the splicing peer, %.2fx kcat -J, %.0f%% of the bare consumer\n' "" \
  "$(calc "$ours_rate / $splice_rate")" "$(calc "$ours_rate / $kcat_rate")" "$(calc "100 * $ours_rate / $bare_rate")"
fail=0
holds "$ours_rate >= 3 * $kcat_rate" || { echo "  goal missed: < 3x kcat -J"; fail=1; }
holds "$ours_rate >= 0.9 * $bare_rate" || { echo "  goal missed: < 90 % of the bare consumer"; fail=1; }
[ "$lines" = "$EVENTS" ] || { echo "  ingest-kafka printed $lines lines, not $EVENTS"; fail=1; }
holds "$ratio >= 5" || { echo "  goal missed: < 5x the Python consumer"; fail=1; }
holds "$RSS_KB <= 128 * 1024" || { echo "  goal missed: peak RSS > 128 MiB"; fail=1; }
[ "$fail" = 0 ] && echo "all goals met" || echo "GOALS MISSED"
exit "$fail"
