#!/usr/bin/env bash
# Install what tests/rig needs on a fresh Debian 12 machine. Run as root.
# Idempotent (does nothing when all is present) and quiet (logs go to a temp
# file that is printed only on failure).
#
#   apt: docker.io (dockerd 20.10 + containerd + runc + tini), skopeo, podman,
#        docker-registry (distribution 2.8.2), nginx, hey, faketime, uidmap,
#        util-linux/mount (unshare, mount --bind for the rig's private mount
#        namespaces), qemu-user (runs the demo image's arm64 program). Installed with their Recommends, the set the rig was
#        tested with (podman wants netavark/containernetworking-plugins).
#   pip: moto[server] + boto3 (+ pytest, pytest-timeout) if not importable by
#        $PYTHON (default python3); normally they come from `pip install -e .[test]`.
#   npm: s3rver 3.7.1 (tests/rig/s3rver.py) into tests/rig/node/node_modules with
#        `npm ci` from the committed package-lock.json. node/npm usually come with the
#        machine image; if not, apt's nodejs + npm (Debian 12: node 18) are installed.
set -euo pipefail

NODE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/node"

APT_PKGS=(docker.io containerd mmdebstrap systemd-container skopeo podman docker-registry nginx hey faketime uidmap util-linux mount
          ca-certificates qemu-user apache2-utils systemd iproute2)
PY="${PYTHON:-python3}"
LOG="$(mktemp -t rig-install-deps.XXXXXX.log)"
POLICY_RC=/usr/sbin/policy-rc.d
made_policy=0

cleanup() {
    if [ "$made_policy" = 1 ]; then rm -f "$POLICY_RC"; fi
    rm -f "$LOG"
}
trap cleanup EXIT

fail() {
    echo "install-deps.sh: $*" >&2
    cat "$LOG" >&2 || true
    exit 1
}

need_apt=()
for p in "${APT_PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
        need_apt+=("$p")
    fi
done

if [ ! -x "$NODE_DIR/node_modules/.bin/s3rver" ]; then
    command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
    command -v npm >/dev/null 2>&1 || need_apt+=(npm)
fi

if [ "${#need_apt[@]}" -gt 0 ]; then
    [ "$(id -u)" = 0 ] || fail "must run as root to install: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
    # Do not let the packages start system services (dockerd, containerd, a
    # registry on :5000): the rig runs its own private instances.
    if [ ! -e "$POLICY_RC" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$POLICY_RC"
        chmod 755 "$POLICY_RC"
        made_policy=1
    fi
    apt-get update -qq >>"$LOG" 2>&1 || fail "apt-get update failed"
    apt-get install -y -qq "${need_apt[@]}" >>"$LOG" 2>&1 || fail "apt-get install failed"
fi

if ! command -v moto_server >/dev/null 2>&1 \
   || ! "$PY" -c 'import boto3, moto, pytest, pytest_timeout' >/dev/null 2>&1; then
    "$PY" -m pip install -q 'moto[server]>=5' boto3 pytest pytest-timeout >>"$LOG" 2>&1 \
        || fail "pip install failed"
fi

if [ ! -x "$NODE_DIR/node_modules/.bin/s3rver" ]; then
    command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 \
        || fail "node and npm are needed for s3rver (apt-get install nodejs npm)"
    (cd "$NODE_DIR" && npm ci --no-audit --no-fund) >>"$LOG" 2>&1 \
        || fail "npm ci in $NODE_DIR failed"
    [ -x "$NODE_DIR/node_modules/.bin/s3rver" ] || fail "npm ci did not install s3rver"
fi

for b in dockerd docker containerd ctr mmdebstrap systemd-nspawn skopeo podman docker-registry nginx hey faketime unshare \
         moto_server qemu-aarch64 node npm htpasswd; do
    command -v "$b" >/dev/null 2>&1 || fail "still missing after install: $b"
done
