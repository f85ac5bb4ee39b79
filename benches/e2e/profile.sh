#!/usr/bin/env bash
# Instructions per proxied request, from callgrind (repeatable, unlike
# time): fulcrum (benches/e2e/fulcrum.toml: one worker, one route, metrics
# on) in front of the nginx endpoint; warm up, zero the counters, send
# exactly N keep-alive requests with h2load, dump, divide. Prints the total
# and the top functions by inclusive and self cost.
#
#   benches/e2e/profile.sh                 # N=20000 CONNS=50 PATH_=/small
#   CALIBRATE=1 benches/e2e/profile.sh     # the same for examples/minimal_proxy.rs
#   VG_OPTS="--cache-sim=yes" CONNS=256 benches/e2e/profile.sh   # cache misses too
#   CONFIG=my.toml benches/e2e/profile.sh   # another fulcrum config (an access log on)
#   H2=1 benches/e2e/profile.sh            # HTTP/2 (prior knowledge, h2load -m 10)
#   apt-get install nginx nghttp2-client valgrind
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
N=${N:-20000}
CONNS=${CONNS:-50}
PATH_=${PATH_:-/small}
BIN=${BIN:-$root/target/release/fulcrum}
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
chmod 755 "$work"
head -c 4096 /dev/urandom > "$work/4k.bin" && chmod 644 "$work/4k.bin"
sed "s|__DIR__|$work|" "$here/nginx-backend.conf" > "$work/nginx-backend.conf"
[ -n "${SKIP_BUILD:-}" ] || (cd "$root" && cargo build --release --bin fulcrum -q)
port=18083
cmd=("$BIN" -c "${CONFIG:-$here/fulcrum.toml}")
if [ -n "${CALIBRATE:-}" ]; then
  (cd "$root" && cargo build --release --example minimal_proxy -q)
  port=18084
  cmd=("$root/target/release/examples/minimal_proxy" 127.0.0.1:18084 127.0.0.1:18080)
fi
nginx -p "$work" -c "$work/nginx-backend.conf" 2>"$work/backend.log" &
FULCRUM_LOG=warn valgrind --tool=callgrind ${VG_OPTS:-} --callgrind-out-file="$work/cg.out" \
  "${cmd[@]}" 2>"$work/valgrind.log" &
vg=$!
for _ in $(seq 1 200); do
  curl -s -o /dev/null "http://127.0.0.1:$port$PATH_" && break
  sleep 0.1
done
proto=(--h1); [ -n "${H2:-}" ] && proto=(-m 10)
h2load "${proto[@]}" -n 2000 -c "$CONNS" "http://127.0.0.1:$port$PATH_" >/dev/null
callgrind_control --zero "$vg" >/dev/null
h2load "${proto[@]}" -n "$N" -c "$CONNS" "http://127.0.0.1:$port$PATH_" | grep -E "^requests:"
callgrind_control --dump "$vg" >/dev/null
kill "$vg"; wait "$vg" 2>/dev/null || true
dump=$(ls "$work"/cg.out.* | sort -t. -k3 -n | head -1)
cp "$dump" "${OUT:-/tmp/fulcrum-callgrind.out}"
per_request() { # callgrind_annotate lines -> instructions per request, name
  awk -v n="$N" '/^ *[0-9,]+ \(/ {c=$1; gsub(",","",c); $1=""; $2=""; printf "%8d  %s\n", c/n, substr($0,1,150)}'
}
callgrind_annotate --inclusive=no --threshold=100 "$dump" > "$work/self.txt" 2>/dev/null || true
callgrind_annotate --inclusive=yes --threshold=100 "$dump" > "$work/inclusive.txt" 2>/dev/null || true
total=$(awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}' "$work/self.txt")
echo "instructions: $total total, $((total / N)) per request (N=$N, $CONNS connections, $PATH_)"
echo "--- inclusive (per request) ---"
per_request < "$work/inclusive.txt" | head -"${TOP:-45}" || true
echo "--- self (per request) ---"
# The frames on the stack when counters are dumped show here at 100% too
# (callgrind_annotate 3.19): left out, they are not self cost.
grep -v "(100.0%)" "$work/self.txt" | per_request | head -"${TOP:-45}" || true
echo "(dump kept in ${OUT:-/tmp/fulcrum-callgrind.out}; callgrind_annotate it for more)"
