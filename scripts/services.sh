# Sourced by scripts/test.sh: starts throwaway PostgreSQL and Redis servers for
# the tests when their binaries are installed, and exports the URLs the tests
# read (DANMAKU_TEST_POSTGRES_URL, DANMAKU_TEST_REDIS_URL). Servers already given
# through those variables are used as they are. Everything is removed on exit.
#
# Install the binaries with: apt-get install postgresql redis-server
# (or brew install postgresql redis).

_danmaku_cleanups=()
_danmaku_cleanup() {
  local c
  for c in "${_danmaku_cleanups[@]}"; do eval "$c" >/dev/null 2>&1 || true; done
}
trap _danmaku_cleanup EXIT

_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_start_postgres() {
  local pg_bin pgdata port owner=()
  pg_bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n1)" 2>/dev/null)
  [ -x "$pg_bin/pg_ctl" ] || pg_bin=$(dirname "$(command -v pg_ctl 2>/dev/null)" 2>/dev/null)
  if [ ! -x "$pg_bin/pg_ctl" ]; then
    echo "services: no PostgreSQL binaries (apt-get install postgresql); its tests will skip" >&2
    return 0
  fi
  pgdata=$(mktemp -d "${TMPDIR:-/tmp}/danmaku-test-pg.XXXXXX")
  port=$(_free_port)
  if [ "$(id -u)" = 0 ]; then  # initdb refuses to run as root: a system user owns the cluster
    id danmakuci >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin danmakuci
    chown danmakuci "$pgdata"
    owner=(runuser -u danmakuci --)
  fi
  "${owner[@]}" "$pg_bin/initdb" -D "$pgdata" -U danmaku --auth=trust -E UTF8 --locale=C.UTF-8 >/dev/null \
    && "${owner[@]}" "$pg_bin/pg_ctl" -D "$pgdata" -l "$pgdata/log" -w start \
         -o "-p $port -k $pgdata -c listen_addresses=127.0.0.1 -c fsync=off" >/dev/null \
    || { echo "services: PostgreSQL did not start (see $pgdata/log)" >&2; return 1; }
  _danmaku_cleanups+=("${owner[*]} $pg_bin/pg_ctl -D $pgdata -m immediate stop; rm -rf $pgdata")
  export DANMAKU_TEST_POSTGRES_URL="postgresql://danmaku@127.0.0.1:$port/postgres"
}

_start_redis() {
  local port
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "services: no redis-server (apt-get install redis-server); its tests will skip" >&2
    return 0
  fi
  port=$(_free_port)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes >/dev/null \
    || { echo "services: redis-server did not start" >&2; return 1; }
  _danmaku_cleanups+=("redis-cli -p $port shutdown nosave")
  export DANMAKU_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
}

[ -n "${DANMAKU_TEST_POSTGRES_URL:-}" ] || _start_postgres
[ -n "${DANMAKU_TEST_REDIS_URL:-}" ] || _start_redis
