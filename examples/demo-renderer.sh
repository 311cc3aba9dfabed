#!/bin/sh
# demo-renderer.sh WORLD_DIR OUTPUT_DIR TILES
# A stand-in for Overviewer used by the local demo fleet: it prints Overviewer's progress lines,
# takes a moment per tile, and writes a tiny index.html into the output directory.
world=$1 out=$2 tiles=${3:-20}
echo "$(date '+%Y-%m-%d %H:%M:%S')  Welcome to the renderfleet demo renderer"
echo "$(date '+%Y-%m-%d %H:%M:%S')  Rendering world $(basename "$world") into $out"
i=0
while [ "$i" -lt "$tiles" ]; do
  sleep 0.1
  i=$((i + 1))
  echo "$(date '+%Y-%m-%d %H:%M:%S')  Rendered $i of $tiles.  $((i * 100 / tiles))% complete.  ETA: ------"
done
printf '<!doctype html><title>%s</title><p>rendered %s tiles of %s\n' "$(basename "$world")" "$tiles" "$(basename "$world")" > "$out/index.html"
echo "$(date '+%Y-%m-%d %H:%M:%S')  Rendering complete!"
