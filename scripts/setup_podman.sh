#!/usr/bin/env bash
# Make a Docker Engine API available through podman (no Docker daemon on these machines).
# Idempotent: installs podman + runc if missing, writes /etc/containers/containers.conf
# (runc, lowered ulimits: see shared/ENVIRONMENT.md), starts `podman system service` on
# MLPIPE_PODMAN_SOCK (default /run/mlpipe-podman.sock) unless it already answers, and prints
# the DOCKER_HOST to use. Run as root.
set -euo pipefail

SOCK="${MLPIPE_PODMAN_SOCK:-/run/mlpipe-podman.sock}"
LOG="${MLPIPE_PODMAN_LOG:-/tmp/mlpipe-podman-service.log}"

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1; then
    echo "installing podman and runc..." >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc >/dev/null
fi

mkdir -p /etc/containers
CONF=/etc/containers/containers.conf
WANT='[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$WANT" ]; then
    printf '%s\n' "$WANT" > "$CONF"
    echo "wrote $CONF" >&2
fi

answers() {
    curl -fsS --max-time 3 --unix-socket "$SOCK" http://d/_ping >/dev/null 2>&1
}

if ! answers; then
    rm -f "$SOCK"
    echo "starting podman system service on $SOCK (log: $LOG)..." >&2
    # started from /: the service outlives this checkout, and conmon fails ("Failed to get working
    # directory") once the folder it was started in is deleted
    (cd / && nohup podman system service --time=0 "unix://$SOCK" >"$LOG" 2>&1 &)
    for _ in $(seq 1 50); do
        answers && break
        sleep 0.2
    done
    if ! answers; then
        echo "podman service did not answer on $SOCK; see $LOG" >&2
        exit 1
    fi
fi

echo "DOCKER_HOST=unix://$SOCK"
