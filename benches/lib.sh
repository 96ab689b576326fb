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
