#!/usr/bin/env bash
# Benchmarks persist against the hand-written psql path and a plain COPY, in the same run,
# on the same PostgreSQL: 2 M events (10 % duplicate keys) into an empty table, then again
# into the filled table. Exits 1 when a goal is missed:
#   >= 2x the psql path (the persist issue asked 1.5x; #29 2x), >= 85,000 rows/s,
#   peak RSS <= 64 MiB; >= 0.7x the plain COPY into an empty table, >= 0.5x into the
#   filled one (#29).
#
#   bench/persist.sh
#   EVENTS=500000 RUNS=1 DATABASE_URL=postgres://postgres@127.0.0.1:5432/test bench/persist.sh
#
# The psql path: \copy of the NDJSON lines into an unlogged staging table (one jsonb column
# and a serial ordinal), then INSERT ... SELECT DISTINCT ON (id) ... ORDER BY id, ord DESC
# ON CONFLICT DO UPDATE: the last event in input order wins, as with persist.
# The plain COPY: \copy of the same lines into a table of one jsonb column (emptied
# before each run: a COPY neither looks up nor replaces anything) — the floor of what
# loading these events costs the server, no keys, no upsert.
# PROFILE=dist (default: fat LTO, as release artifacts are built) or PROFILE=release
# (the profile `cargo install` and scripts/demo use) picks the build measured.
# OLD=path/to/an/older/persist runs it too, in the same rounds, into a table of its own,
# and prints how the build measured compares with it.
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${EVENTS:-2000000}
RUNS=${RUNS:-2}   # best of RUNS per side and pass (this VM's timings are noisy)
DB=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
OUT=bench/out
SCHEMA=ndpipe_bench
mkdir -p "$OUT"
PROFILE=${PROFILE:-dist}
[ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" --quiet --bin persist
IN="$OUT/events-$EVENTS-dups.ndjson"
[ -s "$IN" ] || python3 ../shared/tools/gen_events.py "$EVENTS" --dups 0.1 > "$IN"

calc() { awk "BEGIN { print $1 }"; }
holds() { awk "BEGIN { exit !($1) }"; }
psql_() { PGOPTIONS="-c search_path=$SCHEMA" psql -X -q -v ON_ERROR_STOP=1 "$DB" "$@"; }

psql -X -q -v ON_ERROR_STOP=1 "$DB" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE; CREATE SCHEMA $SCHEMA" 2>/dev/null
psql_ <<'SQL'
CREATE TABLE ours (key text PRIMARY KEY, payload jsonb NOT NULL, meta jsonb, version bigint,
                   first_seen timestamptz, updated_at timestamptz);
CREATE TABLE peer (LIKE ours INCLUDING ALL);
CREATE UNLOGGED TABLE staging (ord bigserial, doc jsonb);
CREATE TABLE plain (doc jsonb);
CREATE TABLE old (LIKE ours INCLUDING ALL);
SQL

# timed NAME CMD: wall seconds into SECS, peak RSS (KiB) of the command into RSS_KB.
# A CHECKPOINT first, so that no run pays for writing out what the one before it left
# (each pass writes about 1 GB of WAL, max_wal_size by default).
timed() {
  local t0 t1
  psql -X -q "$DB" -c CHECKPOINT
  t0=$(date +%s.%N)
  RSS_KB=$( { /usr/bin/time -f %M bash -c "$2" > /dev/null; } 2>&1 | tail -1 )
  t1=$(date +%s.%N)
  SECS=$(calc "$t1 - $t0")
}

# The psql path, end to end: load the lines, upsert the last per key, empty the staging.
# CSV with quote and delimiter bytes that never occur in JSON text keeps every byte as is.
PEER_SQL="\\copy staging (doc) FROM '$IN' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')
INSERT INTO peer AS t (key, payload, first_seen, updated_at)
  SELECT DISTINCT ON (doc->>'id') doc->>'id', doc, now(), now() FROM staging ORDER BY doc->>'id', ord DESC
  ON CONFLICT (key) DO UPDATE SET payload = EXCLUDED.payload, updated_at = EXCLUDED.updated_at;
TRUNCATE staging;"
echo "$PEER_SQL" > "$OUT/peer.sql"
echo "\\copy plain (doc) FROM '$IN' WITH (FORMAT csv, QUOTE e'\\x01', DELIMITER e'\\x02')" > "$OUT/copy.sql"

rows=$(awk -F'"id":"' '{ split($2, a, "\""); print a[1] }' "$IN" | sort -u | wc -l)
echo "input: $IN ($EVENTS events, $rows distinct keys, $(du -mL "$IN" | cut -f1) MiB), $(nproc) cores"
fail=0
for pass in "empty table" "filled table"; do
  peer_secs=; copy_secs=; ours_secs=; old_secs=; ours_rss=0
  for run in $(seq "$RUNS"); do
    # Every run of the first pass starts from empty tables; the second pass replays
    # into the tables the first pass filled (a replay leaves them as they are).
    [ "$pass" = "empty table" ] && psql_ -c "TRUNCATE ours, peer"
    timed peer "PGOPTIONS='-c search_path=$SCHEMA' psql -X -q -v ON_ERROR_STOP=1 '$DB' -f $OUT/peer.sql"
    { [ -z "$peer_secs" ] || holds "$SECS < $peer_secs"; } && peer_secs=$SECS
    psql_ -c "TRUNCATE plain"
    timed copy "PGOPTIONS='-c search_path=$SCHEMA' psql -X -q -v ON_ERROR_STOP=1 '$DB' -f $OUT/copy.sql"
    { [ -z "$copy_secs" ] || holds "$SECS < $copy_secs"; } && copy_secs=$SECS
    [ "$pass" = "empty table" ] && psql_ -c "TRUNCATE ours"
    timed ours "target/$PROFILE/persist -q --database-url '$DB?options=-csearch_path%3D$SCHEMA' --table ours $IN"
    { [ -z "$ours_secs" ] || holds "$SECS < $ours_secs"; } && ours_secs=$SECS
    (( RSS_KB > ours_rss )) && ours_rss=$RSS_KB
    if [ -n "${OLD:-}" ]; then
      [ "$pass" = "empty table" ] && psql_ -c "TRUNCATE old"
      timed old "$OLD -q --database-url '$DB?options=-csearch_path%3D$SCHEMA' --table old $IN"
      { [ -z "$old_secs" ] || holds "$SECS < $old_secs"; } && old_secs=$SECS
    fi
  done
  peer_rate=$(calc "$EVENTS / $peer_secs"); ours_rate=$(calc "$EVENTS / $ours_secs")
  copy_rate=$(calc "$EVENTS / $copy_secs")
  ratio=$(calc "$ours_rate / $peer_rate"); vs_copy=$(calc "$ours_rate / $copy_rate")
  printf '%-13s psql path %8.0f events/s (%5.1f s)   COPY %8.0f events/s (%5.1f s)   persist %8.0f events/s (%5.1f s, rss %.1f MiB)   %.2fx psql, %.2fx COPY\n' \
    "$pass:" "$peer_rate" "$peer_secs" "$copy_rate" "$copy_secs" "$ours_rate" "$ours_secs" "$(calc "$ours_rss / 1024")" "$ratio" "$vs_copy"
  holds "$ratio >= 2" || { echo "  goal missed: < 2x the psql path"; fail=1; }
  holds "$ours_rate >= 85000" || { echo "  goal missed: < 85,000 rows/s"; fail=1; }
  holds "$ours_rss <= 64 * 1024" || { echo "  goal missed: RSS > 64 MiB"; fail=1; }
  [ -z "${OLD:-}" ] || printf '%-13s older persist %8.0f events/s (%5.1f s): this build is %.2fx it\n' \
    "" "$(calc "$EVENTS / $old_secs")" "$old_secs" "$(calc "$old_secs / $ours_secs")"
  if [ "$pass" = "empty table" ]; then
    holds "$vs_copy >= 0.7" || { echo "  goal missed: < 0.7x COPY into an empty table"; fail=1; }
  else
    holds "$vs_copy >= 0.5" || { echo "  goal missed: < 0.5x COPY into the filled table"; fail=1; }
  fi
done

# Both paths must have stored the same thing.
same=$(psql_ -At -c "SELECT count(*) FROM ours o FULL JOIN peer p USING (key)
                     WHERE o.payload IS DISTINCT FROM p.payload")
stored=$(psql_ -At -c "SELECT count(*) FROM ours")
[ "$same" = 0 ] && [ "$stored" = "$rows" ] || { echo "stored rows differ: $same mismatches, $stored rows for $rows keys"; fail=1; }
psql -X -q "$DB" -c "DROP SCHEMA $SCHEMA CASCADE"
[ "$fail" = 0 ] && echo "all goals met" || echo "GOALS MISSED"
exit "$fail"
