#!/usr/bin/env bash
# Benchmarks ingest-http with wrk on loopback (wrk shares the 2 cores), stdout to
# /dev/null, against the goals of the ingest-http issue. Exits 1 when a goal is missed:
#   single-event POSTs (wrk -t1 -c64): >= 50,000 requests/s and >= 1.5x the Go peer
#   NDJSON bodies of 1,000 events (wrk -t1 -c16): >= 1,000,000 events/s
#   peak RSS <= 64 MiB under that load
#
#   bench/http.sh
#   DURATION=20s bench/http.sh
#
# The peer (bench/http/go-peer) is a literal Go net/http implementation of the channel
# design ingest-http replaces: decode, push to a 10k hub, one stdout writer. It is built
# and run in the same run when `go` is installed (apt-get install golang-go); without
# it the ratio is taken against the 30.8k requests/s the issue measured here.
# PROFILE=dist (default: fat LTO, as release artifacts are built) or PROFILE=release
# (the profile `cargo install` and scripts/demo use) picks the build measured.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
OUT=bench/out
mkdir -p "$OUT"
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 2; }
PROFILE=${PROFILE:-dist}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" --quiet --bin ingest-http
BODY="$OUT/body-1000.ndjson"
[ -s "$BODY" ] || python3 ../shared/tools/gen_events.py 1000 > "$BODY"
export BODY

calc() { awk "BEGIN { print $1 }"; }
holds() { awk "BEGIN { exit !($1) }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }
# rate SCRIPT CONNECTIONS URL: requests/s reported by wrk.
rate() { wrk -t1 -c"$2" -d"$DURATION" -s "bench/http/$1" "$3" | awk '/Requests\/sec/ { print $2 }'; }

fail=0
GO_RATE=30800
if command -v go >/dev/null; then
  (cd bench/http/go-peer && GO111MODULE=off go build -o "../../../$OUT/go-peer" main.go)
  port=$(free_port)
  "$OUT/go-peer" -listen "127.0.0.1:$port" > /dev/null & peer=$!
  wait_port "$port"
  GO_RATE=$(rate single.lua 64 "http://127.0.0.1:$port/events")
  kill "$peer"; wait "$peer" 2>/dev/null || true
  printf '%-40s %10.0f requests/s\n' "peer: Go net/http, single event" "$GO_RATE"
else
  echo "go not installed: comparing against the issue's 30,800 requests/s for the Go peer"
fi

port=$(free_port)
target/$PROFILE/ingest-http -q --listen "127.0.0.1:$port" > /dev/null & server=$!
wait_port "$port"
single=$(rate single.lua 64 "http://127.0.0.1:$port/events")
ndjson=$(rate ndjson.lua 16 "http://127.0.0.1:$port/events")
rss_kb=$(awk '/VmHWM/ { print $2 }' "/proc/$server/status")
kill "$server"; wait "$server" 2>/dev/null || true

events=$(calc "$ndjson * 1000")
ratio=$(calc "$single / $GO_RATE")
printf '%-40s %10.0f requests/s  (%.2fx the Go peer)\n' "ingest-http, single event" "$single" "$ratio"
printf '%-40s %10.0f events/s    (%.0f requests/s)\n' "ingest-http, NDJSON bodies of 1,000" "$events" "$ndjson"
printf '%-40s %10.1f MiB\n' "ingest-http peak RSS" "$(calc "$rss_kb / 1024")"
holds "$single >= 50000" || { echo "  goal missed: < 50,000 single-event requests/s"; fail=1; }
holds "$ratio >= 1.5" || { echo "  goal missed: < 1.5x the Go peer"; fail=1; }
holds "$events >= 1000000" || { echo "  goal missed: < 1,000,000 events/s in NDJSON bodies"; fail=1; }
holds "$rss_kb <= 64 * 1024" || { echo "  goal missed: peak RSS > 64 MiB"; fail=1; }
[ "$fail" = 0 ] && echo "all goals met" || echo "GOALS MISSED"
exit "$fail"
