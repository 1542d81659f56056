# Shell helpers shared by the bench scripts (sourced; bash).
#
# calc EXPR / holds COND: floating-point arithmetic and tests, with awk.
# free_port / wait_port PORT: a free loopback port; wait until something listens on it.
# benthos_build: builds Benthos $BENTHOS_VERSION (MIT core, cmd/benthos) once with go and
#   sets BENTHOS to its path (returns 1 without go or when the build fails).

# bench_init DEFAULT_PROFILE: EVENTS (default 1 M), RUNS (3), OUT=bench/out and PROFILE
#   (default DEFAULT_PROFILE) set; the binaries built with that profile unless SKIP_BUILD.
bench_init() {
  EVENTS=${EVENTS:-1000000}
  RUNS=${RUNS:-3}
  OUT=bench/out
  mkdir -p "$OUT"
  PROFILE=${PROFILE:-$1}
  [ -n "${SKIP_BUILD:-}" ] || cargo build --profile "$PROFILE" --quiet --bins
}

calc() { awk "BEGIN { print $1 }"; }
holds() { awk "BEGIN { exit !($1) }"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.05; done; return 1; }

BENTHOS_VERSION=${BENTHOS_VERSION:-v4.60.0}
BENTHOS_DIR=${NDPIPE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ndpipe}/benthos-$BENTHOS_VERSION
benthos_build() {
  command -v go >/dev/null || return 1
  if [ ! -x "$BENTHOS_DIR/benthos" ]; then
    echo "building Benthos $BENTHOS_VERSION into $BENTHOS_DIR (once)" >&2
    # In a throw-away module, with the version pinned by go get: the module proxy here
    # serves pinned versions but not version lists, which `go install pkg@v` asks for.
    local mod
    mod=$(mktemp -d)
    mkdir -p "$BENTHOS_DIR"
    (cd "$mod" && go mod init ndpipe-bench-benthos >/dev/null 2>&1 \
      && go get "github.com/redpanda-data/benthos/v4/cmd/benthos@$BENTHOS_VERSION" \
      && go build -o "$BENTHOS_DIR/benthos" github.com/redpanda-data/benthos/v4/cmd/benthos) || { rm -rf "$mod"; return 1; }
    rm -rf "$mod"
  fi
  BENTHOS=$BENTHOS_DIR/benthos
}

# kcat_fetch: sets KCAT to a command running Debian's kcat: the one on PATH, else the
#   kcat package and the libraries it needs (librdkafka1, libyajl2), fetched with
#   apt-get download and unpacked into the cache once (nothing installed system-wide).
KCAT_DIR=${NDPIPE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ndpipe}/kcat
kcat_fetch() {
  if command -v kcat >/dev/null; then KCAT=kcat; return; fi
  if [ ! -x "$KCAT_DIR/usr/bin/kcat" ]; then
    command -v apt-get >/dev/null || return 1
    local tmp
    tmp=$(mktemp -d); chmod 777 "$tmp"
    (cd "$tmp" && apt-get download -qq kcat librdkafka1 libyajl2 >&2) || { rm -rf "$tmp"; return 1; }
    mkdir -p "$KCAT_DIR"
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$KCAT_DIR"; done
    rm -rf "$tmp"
  fi
  KCAT="env LD_LIBRARY_PATH=$KCAT_DIR/usr/lib/x86_64-linux-gnu $KCAT_DIR/usr/bin/kcat"
}
