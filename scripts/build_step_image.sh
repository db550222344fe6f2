#!/usr/bin/env bash
# Build the minimal step image localhost/mlpipe-python:bookworm (Debian bookworm + python3, nothing
# else: no pip, no airflow, no airflow_mlpipe) without a registry: debootstrap a rootfs and import it.
# Idempotent: does nothing if the image exists. Needs root, podman (scripts/setup_podman.sh) and
# debootstrap (installed if missing). The runtime needs stdlib modules that python3-minimal lacks
# (checked: libpython3.11-minimal has argparse, runpy, zipfile, hashlib but not json, tarfile,
# concurrent.futures, _csv), so libpython3.11-stdlib is included too.
set -euo pipefail

IMAGE="${MLPIPE_STEP_IMAGE:-localhost/mlpipe-python:bookworm}"
MIRROR="${MLPIPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

if podman image exists "$IMAGE"; then
    echo "image $IMAGE exists"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

ROOTFS="$(mktemp -d /tmp/mlpipe-rootfs.XXXXXX)"
trap 'rm -rf "$ROOTFS"' EXIT

start=$(date +%s)
debootstrap --variant=minbase --include=python3-minimal,libpython3.11-stdlib bookworm "$ROOTFS" "$MIRROR" >/tmp/mlpipe-debootstrap.log 2>&1 \
    || { echo "debootstrap failed, see /tmp/mlpipe-debootstrap.log" >&2; exit 1; }
# Smaller image: drop apt lists and docs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* "$ROOTFS"/var/cache/apt/*.bin
chroot "$ROOTFS" python3 -c "import json, runpy, zipfile, zipimport, tarfile, csv, argparse, hashlib, concurrent.futures, tempfile, shutil, signal, base64" \
    || { echo "the rootfs python3 lacks modules the runtime needs" >&2; exit 1; }
mid=$(date +%s)
tar -C "$ROOTFS" -c . | podman import --change 'CMD ["python3"]' - "$IMAGE" >/dev/null 2>&1
end=$(date +%s)
echo "built $IMAGE: debootstrap $((mid - start)) s, import $((end - mid)) s, size $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
