#!/usr/bin/env bash
# Build the base image every image of docker-compose.yml starts FROM, from Debian packages only
# (no image registry needed): debootstrap bookworm into a folder, then `docker import`.
#
#   scripts/docker_base.sh [TAG]      # default toh-base:bookworm
#
# A machine keeps the tag between runs: when it exists, nothing is built (delete it with
# `docker rmi toh-base:bookworm` to rebuild, e.g. for Debian's security updates). The packages:
# Debian 12's python3 (3.11) and venv, CA certificates; nothing else (minbase variant).
# Prints how long the first build took.
set -euo pipefail
tag="${1:-toh-base:bookworm}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag: present, not rebuilt"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
start=$(date +%s)
root=$(mktemp -d /tmp/toh-base-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -20 "$root.log" >&2; exit 1; }
rm -f "$root.log"
# what an image does not need: downloaded packages, package lists, documentation, translations
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
       "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
version=$(cat "$root/etc/debian_version")
tar -C "$root" -c . | docker import \
  -c 'CMD ["/bin/bash"]' -c 'ENV LANG=C.UTF-8' \
  -m "debootstrap minbase bookworm (Debian $version) + python3 python3-venv ca-certificates" - "$tag" >/dev/null
echo "base image $tag: built from Debian $version in $(( $(date +%s) - start )) s"
