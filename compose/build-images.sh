#!/usr/bin/env bash
# Build renderfleet's images on a machine that cannot pull: a Debian bookworm base made with
# debootstrap (--variant=minbase, plus redis-server) from the mirror apt already uses, imported
# with `docker import` and cached; binaries built on the host. Same Dockerfile as users build,
# one build argument apart (see compose/Dockerfile).
#
#   compose/build-images.sh [TAG]      # default tag: dev
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dev}
cache=${RENDERFLEET_IMAGE_CACHE:-/var/cache/renderfleet}
base=renderfleet/base:bookworm

if ! docker image inspect "$base" >/dev/null 2>&1; then
  if [ ! -f "$cache/bookworm-minbase.tar" ]; then
    command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    mirror=$( { grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}';
                grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $2}'; } \
              | grep -v -e security -e '^$' | head -n1 || true)
    mirror=${mirror:-http://deb.debian.org/debian}
    echo "--- debootstrap bookworm (minbase + redis-server) from $mirror"
    mkdir -p "$cache"
    rm -rf "$cache/rootfs"
    debootstrap --variant=minbase --include=redis-server,ca-certificates bookworm "$cache/rootfs" "$mirror" >"$cache/debootstrap.log"
    tar -C "$cache/rootfs" -cf "$cache/bookworm-minbase.tar.tmp" .
    mv "$cache/bookworm-minbase.tar.tmp" "$cache/bookworm-minbase.tar"
    rm -rf "$cache/rootfs"
  fi
  echo "--- docker import $base"
  docker import "$cache/bookworm-minbase.tar" "$base" >/dev/null
fi

echo "--- host binaries"
cargo build --release --locked --bins -q

for target in agent coordinator redis; do
  echo "--- renderfleet/$target:$tag"
  # The classic builder: this machine's docker CLI has no buildx, and no image can be pulled.
  DOCKER_BUILDKIT=0 docker build -q -f compose/Dockerfile --target "$target" \
    --build-arg OFFLINE_BASE="$base" -t "renderfleet/$target:$tag" . >/dev/null 2>"$cache/build-$target.log" \
    || { cat "$cache/build-$target.log" >&2; exit 1; }
done
docker image ls 'renderfleet/*'
