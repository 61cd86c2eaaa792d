#!/usr/bin/env bash
# The ingress benchmark: fedwasm's global ingress vs nginx as a plain reverse proxy
# (same number of workers) vs the backend directly, side by side in one run, with
# wrk. Installs wrk and nginx first when they are missing (apt-get; with sudo when
# not root). nginx runs in the foreground with its own configuration under a temp
# dir, never as a system service.
#
# Settings (environment): FEDWASM_BENCH_WORKERS (cores), FEDWASM_BENCH_CONNECTIONS
# (64), FEDWASM_BENCH_WRK_THREADS (2), FEDWASM_BENCH_DURATION (10, seconds),
# FEDWASM_BENCH_ROUNDS (3), FEDWASM_BENCH_BACKEND_THREADS (= workers).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing ${missing[*]}" >&2
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    # Installing nginx must not start (or enable) the system service: a policy-rc.d
    # that forbids it, put back as it was afterwards.
    policy=/usr/sbin/policy-rc.d
    had_policy=0
    [ -e "$policy" ] && had_policy=1
    if [ "$had_policy" -eq 0 ]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod +x "$policy"
        trap '"${sudo[@]}" rm -f "$policy"' EXIT
    fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's nginx is in /usr/sbin, not always on a non-root PATH.
if ! command -v nginx >/dev/null 2>&1 && [ -x /usr/sbin/nginx ]; then
    export FEDWASM_BENCH_NGINX=/usr/sbin/nginx
fi

echo "==> cargo bench -p fedwasm-host --bench ingress (release; the first build takes minutes)" >&2
exec cargo bench -p fedwasm-host --bench ingress
