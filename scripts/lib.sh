# Shell helpers shared by scripts/test, scripts/demo and the service scripts (sourced).
#
# pg_server_bin: the folder of the newest PostgreSQL server binaries Debian's packages
#   installed (/usr/lib/postgresql/VERSION/bin); fails when there are none.
# ensure_postgres_user: as root, the `postgres` user the server runs as (it refuses root).
# need_packages CMD:PACKAGE ...
#   For each command (or, when CMD starts with /, each file) that is missing, names the
#   Debian package that provides it. When any is missing: as root on Debian, installs them
#   with apt-get (and says so); elsewhere prints what to install and exits 1.

NDPIPE_CACHE_DIR=${NDPIPE_CACHE_DIR:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/ndpipe}

say() { echo "${SCRIPT_NAME:-ndpipe}: $*" >&2; }
die() { say "error: $*"; exit 1; }

need_packages() {
  local want=() spec cmd pkg
  for spec in "$@"; do
    cmd=${spec%%:*} pkg=${spec#*:}
    if [[ $cmd == /* ]]; then
      compgen -G "$cmd" >/dev/null && continue
    else
      command -v "$cmd" >/dev/null 2>&1 && continue
    fi
    [[ " ${want[*]} " == *" $pkg "* ]] || want+=("$pkg")
  done
  [ ${#want[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing with apt-get: ${want[*]}"
    # Debian's postgresql would create and start a cluster of its own on port 5432:
    # the tests run theirs (scripts/test-postgres), so ask for none.
    if [[ " ${want[*]} " == *" postgresql "* ]] && [ ! -e /etc/postgresql-common/createcluster.conf ]; then
      mkdir -p /etc/postgresql-common
      echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
    fi
    # One apt-get update per machine and day is enough.
    local stamp=/var/lib/apt/periodic/ndpipe-update-stamp
    if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +1440 2>/dev/null)" ]; then
      apt-get update -qq >&2 || die "apt-get update failed"
      mkdir -p "$(dirname "$stamp")" && touch "$stamp"
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >&2 \
      || die "apt-get install ${want[*]} failed"
  else
    die "missing: ${want[*]} (Debian/Ubuntu package names); install them and run again"
  fi
}

# What building ndpipe needs: rdkafka builds its bundled librdkafka (a C compiler,
# make, perl) against the system's OpenSSL, found with pkg-config. (No cmake: none of
# the enabled features uses it; zlib is built from source when its headers are absent.)
need_build_prerequisites() {
  command -v cargo >/dev/null 2>&1 || die "no cargo: install Rust (https://rustup.rs) and run again"
  need_packages cc:build-essential make:make perl:perl pkg-config:pkg-config \
    /usr/include/openssl/ssl.h:libssl-dev
}

# cargo_target_dir: where cargo puts what it builds for this project, as cargo itself says
# (CARGO_TARGET_DIR, build.target-dir in a .cargo/config.toml, or ./target).
cargo_target_dir() {
  local dir
  dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
  [ -n "$dir" ] || die "cargo metadata did not say where cargo builds"
  printf '%s\n' "$dir"
}

pg_server_bin() {
  compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null || return 1
  dirname "$(ls -d /usr/lib/postgresql/*/bin/postgres | sort -V | tail -1)"
}

ensure_postgres_user() {
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
}
