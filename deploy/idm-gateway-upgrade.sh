#!/bin/sh
# Zero-downtime upgrade (or restart with a new binary) of a running idm-gateway.
#
#   idm-gateway-upgrade PID [idm-gateway flags...]
#
# PID is the running gateway (systemd: ExecReload=... $MAINPID). The flags and the
# IDM_GATEWAY_* environment must describe the same instance as the running one: above all the
# same data directory and upgrade socket (IDM_GATEWAY_UPGRADE_SOCK, default DATA/upgrade.sock).
#
# 1. starts the new process with --upgrade: it reads its conf, opens the store, then waits on
#    the upgrade socket;
# 2. once the socket exists, sends SIGQUIT to PID, which hands its listening sockets over and
#    drains (its in-flight requests finish, it exits shutdownGraceSeconds later);
# 3. returns once the new process holds the listeners (it removes the socket).
# If the new process fails before step 2 (bad conf, store), PID is left alone and keeps
# serving; the exit status is 1.
set -eu

old="${1:?usage: idm-gateway-upgrade PID [idm-gateway flags...]}"
shift
bin="${IDM_GATEWAY_BIN:-/usr/local/bin/idm-gateway}"
sock="${IDM_GATEWAY_UPGRADE_SOCK:-${IDM_GATEWAY_DATA:-data}/upgrade.sock}"
# Tenths of a second to wait for each step.
steps="${IDM_GATEWAY_UPGRADE_WAIT:-600}"

kill -0 "$old"
# A socket left by an upgrade that failed half-way would be taken for the new process's.
rm -f "$sock"
"$bin" --upgrade "$@" &
new=$!

i=0
while [ ! -S "$sock" ]; do
    if ! kill -0 "$new" 2>/dev/null; then
        echo "idm-gateway-upgrade: the new process exited before taking over; $old keeps serving" >&2
        exit 1
    fi
    i=$((i + 1))
    if [ "$i" -gt "$steps" ]; then
        kill "$new"
        echo "idm-gateway-upgrade: the new process did not get ready; $old keeps serving" >&2
        exit 1
    fi
    sleep 0.1
done

kill -QUIT "$old"
i=0
while [ -S "$sock" ]; do
    i=$((i + 1))
    if ! kill -0 "$new" 2>/dev/null || [ "$i" -gt "$steps" ]; then
        echo "idm-gateway-upgrade: the listeners were not handed over to $new" >&2
        exit 1
    fi
    sleep 0.1
done
echo "idm-gateway-upgrade: $new serves; $old drains"
