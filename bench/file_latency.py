#!/usr/bin/env python3
"""Write-to-stdout latency of `ingest-file --follow` (bench/file.sh).

    file_latency.py write FILE RATE SECONDS   appends RATE lines a second to FILE, each
                                               stamped with CLOCK_MONOTONIC (ns) when
                                               written, in 1 ms slices
    file_latency.py read N                     reads ingest-file's stdout until N lines,
                                               prints p50/p90/p99/max of now - stamp (ms)

CLOCK_MONOTONIC is one clock for every process of the machine, so the two sides compare.
"""
import os
import sys
import time


def write(path, rate, seconds):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    start = time.monotonic_ns()
    end = start + int(seconds * 1e9)
    sent = 0
    pad = "x" * 120  # lines of ~200 bytes, like a log event
    while True:
        now = time.monotonic_ns()
        if now >= end:
            break
        due = int((now - start) * rate / 1e9)
        if due > sent:
            lines = "".join(
                '{"id":"e-%d","t":%d,"pad":"%s"}\n' % (sent + i, now, pad)
                for i in range(due - sent)
            )
            os.write(fd, lines.encode())
            sent = due
        time.sleep(0.001)
    os.close(fd)
    print(sent)


def read(n):
    lat = []
    stdin = sys.stdin.buffer
    for line in stdin:
        now = time.monotonic_ns()
        at = line.find(b'"t":')
        if at < 0:
            continue
        end = line.find(b",", at)
        lat.append(now - int(line[at + 4 : end]))
        if len(lat) >= n:
            break
    lat.sort()
    if not lat:
        print("no lines")
        sys.exit(1)
    q = lambda p: lat[min(len(lat) - 1, int(len(lat) * p))] / 1e6
    print("%d %.2f %.2f %.2f %.2f" % (len(lat), q(0.5), q(0.9), q(0.99), lat[-1] / 1e6))


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
    else:
        read(int(sys.argv[2]))
