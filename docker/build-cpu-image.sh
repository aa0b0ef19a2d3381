#!/usr/bin/env bash
# Build the CPU image (docker/cpu.Dockerfile) with podman and run `detect` in it on the samples.
#
#   docker/build-cpu-image.sh [OUT_DIR]          (from anywhere; OUT_DIR default: runs/docker-cpu)
#
# Where an image registry is reachable, the Dockerfile's default base (python:3.11-slim-bookworm) is
# pulled as usual: set BASE_IMAGE=python:3.11-slim-bookworm. Otherwise (the default here) a local
# base is made once from Debian packages: `debootstrap --variant=minbase bookworm` with python3,
# python3-venv and ca-certificates, then `podman import` as localhost/facemask-base:bookworm.
# Rootless or nested machines need podman's `--runtime runc --cgroup-manager=cgroupfs`, a nofile
# ulimit within the hard limit and `--isolation=chroot --network=host` for the build; all are set here (PODMAN_FLAGS,
# BUILD_FLAGS override them). pip inside the build uses the host's CA bundle and index settings.
#
# Writes OUT_DIR/detect.log, OUT_DIR/detect/summary.json (the container's results) and prints them.
# SERVE_IMAGE=NAME also builds the serving image (docker/serve.Dockerfile) on top, as NAME.
# Exit status: 0 on success, 3 when podman or debootstrap is missing, else the failing step's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-$ROOT/runs/docker-cpu}" && cd "${1:-$ROOT/runs/docker-cpu}" && pwd)"
IMAGE="${IMAGE:-localhost/facemask-sdk:cpu}"
LOCAL_BASE="localhost/facemask-base:bookworm"
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE}"
read -r -a PODMAN <<< "podman ${PODMAN_FLAGS:---runtime runc --cgroup-manager=cgroupfs}"
# podman asks for a nofile limit above the hard limit of a nested container; ask for what there is
NOFILE="nofile=$(ulimit -Hn):$(ulimit -Hn)"
read -r -a BUILD <<< "${BUILD_FLAGS:---isolation=chroot --network=host --ulimit $NOFILE}"

command -v podman >/dev/null || { echo "podman is not installed (apt-get install podman)" >&2; exit 3; }

if [ "$BASE_IMAGE" = "$LOCAL_BASE" ] && ! "${PODMAN[@]}" image exists "$LOCAL_BASE"; then
    command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 3; }
    ROOTFS="$(mktemp -d)"
    trap 'rm -rf "$ROOTFS"' EXIT
    echo "== base image $LOCAL_BASE from debootstrap (once, about 2 minutes)"
    debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOTFS" \
        "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" > "$OUT_DIR/debootstrap.log"
    tar -C "$ROOTFS" -c . | "${PODMAN[@]}" import - "$LOCAL_BASE" > /dev/null
fi

# pip in the build sees what pip sees here: the CA bundle (a proxy may re-sign TLS) and extra indexes
CA_BUNDLE="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
PIP_ARGS=()
[ -f "$CA_BUNDLE" ] && PIP_ARGS+=(--volume "$CA_BUNDLE:/etc/ssl/certs/host-ca.crt:ro" --env PIP_CERT=/etc/ssl/certs/host-ca.crt)
[ -n "${PIP_INDEX_URL:-}" ] && PIP_ARGS+=(--env "PIP_INDEX_URL=$PIP_INDEX_URL")

echo "== podman build -f docker/cpu.Dockerfile --build-arg BASE_IMAGE=$BASE_IMAGE -t $IMAGE"
"${PODMAN[@]}" build "${BUILD[@]}" "${PIP_ARGS[@]}" -f "$ROOT/docker/cpu.Dockerfile" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" "$ROOT" > "$OUT_DIR/build.log" 2>&1 \
    || { tail -n 30 "$OUT_DIR/build.log" >&2; exit 4; }

echo "== podman run $IMAGE /data --out /out/detect (samples/images mounted read-only)"
rm -rf "$OUT_DIR/detect"
chmod a+rwx "$OUT_DIR"  # the image runs as uid 10001
# runc cannot raise RLIMIT_NPROC in a nested container: the run asks for a modest one
"${PODMAN[@]}" run --rm --network=none --ulimit "$NOFILE" --ulimit nproc=4096:4096 \
    --volume "$ROOT/samples/images:/data:ro" --volume "$OUT_DIR:/out" \
    "$IMAGE" /data --out /out/detect 2>&1 | tee "$OUT_DIR/detect.log"
test -f "$OUT_DIR/detect/summary.json"
"${PODMAN[@]}" image inspect "$IMAGE" --format 'image {{.Id}} size {{.Size}} user {{.Config.User}}'

# SERVE_IMAGE=localhost/facemask-sdk:serve also builds docker/serve.Dockerfile on top of the CPU image
# (the [serve] extra: PyTriton); tests/system/test_docker.py then runs it as a server and queries it.
if [ -n "${SERVE_IMAGE:-}" ]; then
    echo "== podman build -f docker/serve.Dockerfile --build-arg BASE_IMAGE=$IMAGE -t $SERVE_IMAGE"
    "${PODMAN[@]}" build "${BUILD[@]}" "${PIP_ARGS[@]}" -f "$ROOT/docker/serve.Dockerfile" \
        --build-arg "BASE_IMAGE=$IMAGE" -t "$SERVE_IMAGE" "$ROOT" > "$OUT_DIR/build-serve.log" 2>&1 \
        || { tail -n 30 "$OUT_DIR/build-serve.log" >&2; exit 5; }
    "${PODMAN[@]}" image inspect "$SERVE_IMAGE" --format 'serve image {{.Id}} size {{.Size}} user {{.Config.User}}'
fi
