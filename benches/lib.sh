# Shell helpers shared by the load benchmarks (sourced: `. "$(dirname "$0")/lib.sh"`).

# A loopback port nothing listens on (the kernel's pick).
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_for SECONDS CMD...: until CMD succeeds (false after SECONDS).
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# "user system" CPU ticks of a process and its direct children (nginx's workers).
cpu_ticks_split() {
    local p
    for p in "$1" $(pgrep -P "$1" || true); do
        # Fields after "comm": state is 1st, utime 12th, stime 13th.
        [[ -r /proc/$p/stat ]] && sed 's/^.*) //' "/proc/$p/stat"
    done | awk '{u += $12; s += $13} END {print u + 0, s + 0}'
}

# Total (user + system) CPU ticks of a process and its direct children.
cpu_ticks() { cpu_ticks_split "$1" | awk '{print $1 + $2}'; }

# Median and minimum of whitespace-separated numbers on stdin.
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
minimum() { tr ' ' '\n' | grep -v '^$' | sort -n | head -1; }

# start_pg DIR: a throwaway PostgreSQL server in DIR on a free loopback port, with the
# server's durable defaults (fsync on, synchronous_commit on: a commit is on disk when
# acknowledged). Sets PG_URL (database "bench" owned by role "gw") and PG_DIR; stop_pg stops
# it. As root the server runs as the postgres user (initdb refuses root).
start_pg() {
    PG_DIR=$1
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
        { echo "no PostgreSQL under /usr/lib/postgresql (apt-get install postgresql)" >&2; return 1; }
    mkdir -p "$PG_DIR"
    PG_AS=()
    if [ "$(id -u)" = 0 ]; then chown -R postgres "$PG_DIR"; PG_AS=(runuser -u postgres --); fi
    "${PG_AS[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -A trust -U postgres -E UTF8 --locale=C >/dev/null
    local port
    port=$(free_port)
    "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w start \
        -o "-p $port -h 127.0.0.1 -k $PG_DIR -c shared_buffers=${PG_SHARED_BUFFERS:-512MB}" >/dev/null
    "${PG_AS[@]}" "$PG_BIN/psql" -q -h 127.0.0.1 -p "$port" -U postgres \
        -c "CREATE ROLE gw LOGIN PASSWORD 'bench'" -c "CREATE DATABASE bench OWNER gw"
    PG_URL="postgres://gw:bench@127.0.0.1:$port/bench"
}

stop_pg() {
    [ -n "${PG_DIR:-}" ] && [ -d "$PG_DIR/data" ] &&
        "${PG_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
}
