#!/usr/bin/env bash
# stalled.sh SPOOKY [CONNS]: what clients that never read cost spooky.
# Starts bin/backend and SPOOKY (a spooky binary) on fixed loopback ports
# (19001, 19443, 19901) with 64 pool workers, opens CONNS×100 (default
# 1 000) downloads of 8 MiB whose bodies are never read (h3load -stall,
# 64 KiB stream windows) for 8 s, and meanwhile runs an ordinary 4 s load
# beside them. Prints spooky's RSS before and while the streams are held,
# the RSS per stalled stream, and how the ordinary load fared. Run
# `make build` first.
set -euo pipefail
spooky=$(realpath "$1")
conns=${2:-10}
bin=$(realpath "$(dirname "$0")/../bin")
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
cat >"$dir/config.yaml" <<CFG
listen: { address: "127.0.0.1:19443" }
admin: { address: "127.0.0.1:19901" }
log: { level: error }
stages: { pool: { workers: 64 } }
routes: [ { match: { path_prefix: "/" }, upstream: app } ]
upstreams: { app: { endpoints: [ { address: "127.0.0.1:19001" } ] } }
CFG
"$bin/backend" -listen 127.0.0.1:19001 >/dev/null 2>&1 &
"$spooky" -config "$dir/config.yaml" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 50); do "$bin/h3load" -timeout 300ms https://127.0.0.1:19443/ >/dev/null 2>&1 && break; sleep 0.1; done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$pid/status"; }
idle=$(rss)
"$bin/h3load" -stall -c "$conns" -s 100 -warmup 0 -d 8s 'https://127.0.0.1:19443/bytes?n=8388608' >/dev/null 2>&1 &
stall=$!
sleep 3 # the stalled streams fill their windows
"$bin/h3load" -c 4 -s 8 -warmup 0 -d 4s https://127.0.0.1:19443/ >"$dir/ordinary.txt" 2>&1
held=$(rss)
wait "$stall"
echo "stalled streams $((conns * 100)): spooky RSS ${idle} kB idle, ${held} kB while held, $(((held - idle) / (conns * 100))) kB per stalled stream"
echo "ordinary load beside them:"
grep -E '^(requests|errors|statuses)' "$dir/ordinary.txt"
