#!/usr/bin/env bash
# Idempotent system setup for the full test suite (needs root on Debian): podman serving the Docker
# Engine API with a local python3 image, Chromium for the UI test, PostgreSQL and Redis running.
# Fast when everything is already there. MLPIPE_SKIP_SYSTEM=1 skips it (then set MLPIPE_SKIP_DOCKER=1 too).
set -euo pipefail
[ "${MLPIPE_SKIP_SYSTEM:-0}" = "1" ] && { echo "system setup skipped (MLPIPE_SKIP_SYSTEM=1)"; exit 0; }
here="$(cd "$(dirname "$0")" && pwd)"

need=()
for pkg in podman runc debootstrap chromium postgresql redis-server; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != "0" ]; then
    echo "missing Debian packages: ${need[*]}; run as root or: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PostgreSQL and Redis for the distributed shape (already running on a python-svc machine).
if ! (echo > /dev/tcp/127.0.0.1/5432) 2>/dev/null; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! (echo > /dev/tcp/127.0.0.1/6379) 2>/dev/null; then
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log || true
fi

bash "$here/setup_podman.sh"
bash "$here/build_step_image.sh"
