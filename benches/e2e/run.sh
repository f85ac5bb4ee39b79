#!/usr/bin/env bash
# Side-by-side CPU cost per proxied request: nginx, HAProxy and fulcrum, each
# with one worker pinned to CPU 1; wrk and the nginx endpoint on CPU 0.
# Prints one markdown table per scenario (medians of ROUNDS rounds), the
# per-round ratios of fulcrum to the best peer, and the idle-connection
# memory table. Skips a peer that is not installed.
#
#   benches/e2e/run.sh            # ROUNDS=3 DURATION=10 by default
#   WORKERS=2 benches/e2e/run.sh  # each proxy with 2 workers, nothing pinned
#   ACCESS_LOG=1 benches/e2e/run.sh   # every proxy writes an access log to a
#                                     # file in the same directory (nginx:
#                                     # combined, HAProxy: httplog, fulcrum: json)
#   SCENARIOS="small:50 4k:50" IDLE=0 benches/e2e/run.sh   # some scenarios, no idle test
#
# A scenario is PATH:CONNECTIONS[:close]: PATH is small (12 B), 4k or 1m
# (1 MiB) on the endpoint; ":close" sends `Connection: close`, so every
# request comes on a new TCP connection to the proxy.
#   apt-get install nginx haproxy wrk   # the peers and the load generator
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
# 10,000 is the goal; HAProxy needs 2 x maxconn descriptors, and the
# machines here allow 20,000 per process, so 9,000 fits every contender.
IDLE=${IDLE:-9000}
# WORKERS=1: the proxy pinned to CPU 1, wrk and the endpoint to CPU 0.
# WORKERS=2: the proxy with two workers, everything free to use both CPUs.
WORKERS=${WORKERS:-1}
if [ "$WORKERS" = 1 ]; then proxy_cpus=1; load_cpus=0; else proxy_cpus=0-$(($(nproc) - 1)); load_cpus=$proxy_cpus; fi
work="$(mktemp -d)"
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)"; exit 1; }
command -v nginx >/dev/null || { echo "nginx is not installed (apt-get install nginx): it is also the endpoint"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
chmod 755 "$work"   # nginx workers run unprivileged
head -c 4096 /dev/urandom > "$work/4k.bin" && chmod 644 "$work/4k.bin"
head -c 1048576 /dev/urandom > "$work/1m.bin" && chmod 644 "$work/1m.bin"
sed "s|__DIR__|$work|" "$here/nginx-backend.conf" > "$work/nginx-backend.conf"
cp "$here/nginx-proxy.conf" "$here/haproxy.cfg" "$work/"
# fulcrum watches its config's directory; the endpoint opens 4k.bin in
# $work on every request, and each open would wake the watcher's thread
# (which preempts the pinned worker). Its own directory, as in production.
mkdir -p "$work/fulcrum" && cp "$here/fulcrum.toml" "$work/fulcrum/"
sed -i "s/^worker_processes 1;/worker_processes $WORKERS;/" "$work/nginx-proxy.conf"
sed -i "s/^    nbthread 1/    nbthread $WORKERS/" "$work/haproxy.cfg"
sed -i "s/^workers = 1/workers = $WORKERS/" "$work/fulcrum/fulcrum.toml"
if [ -n "${ACCESS_LOG:-}" ]; then
  # Outside fulcrum's config directory, which it watches.
  mkdir -p "$work/logs" && chmod 777 "$work/logs"
  sed -i "s|^    access_log off;|    access_log $work/logs/nginx-access.log combined;|" "$work/nginx-proxy.conf"
  sed -i "s|^    mode http|    mode http\n    log global\n    option httplog|" "$work/haproxy.cfg"
  sed -i "s|^global|global\n    log stdout format raw local0|" "$work/haproxy.cfg"
  printf '\n[access_log]\nenabled = true\nformat = "json"\npath = "%s"\n' "$work/logs/fulcrum-access.log" >> "$work/fulcrum/fulcrum.toml"
fi
(cd "$root" && cargo build --release --bin fulcrum -q)

taskset -c "$load_cpus" nginx -p "$work" -c "$work/nginx-backend.conf" 2>"$work/backend.log" & sleep 0.5

declare -A start_cmd
start_cmd[direct]=""
start_cmd[nginx]="nginx -p $work -c $work/nginx-proxy.conf"
start_cmd[haproxy]="haproxy -f $work/haproxy.cfg"
start_cmd[fulcrum]="$root/target/release/fulcrum -c $work/fulcrum/fulcrum.toml"
declare -A port=([direct]=18080 [nginx]=18081 [haproxy]=18082 [fulcrum]=18083 [hyper]=18084)
peers=(nginx haproxy fulcrum)
# CALIBRATE=1: also the floor of the stack, examples/minimal_proxy.rs (hyper
# both sides, no routing, no metrics, no limits).
if [ -n "${CALIBRATE:-}" ]; then
  (cd "$root" && cargo build --release --example minimal_proxy -q)
  start_cmd[hyper]="$root/target/release/examples/minimal_proxy 127.0.0.1:18084 127.0.0.1:18080"
  peers+=(hyper)
fi
contenders=(direct)
for c in "${peers[@]}"; do
  bin=${start_cmd[$c]%% *}
  if command -v "$bin" >/dev/null 2>&1 || [ -x "$bin" ]; then contenders+=("$c"); else echo "skipping $c: not installed"; fi
done

pids_of() { # the proxy's processes and their children (nginx: master + worker)
  local main; main=$(pgrep -f -- "${start_cmd[$1]}" || true)
  for p in $main; do echo "$p"; pgrep -P "$p" || true; done
}
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t
}
user_ticks() { # utime alone
  local t=0; for p in "$@"; do t=$((t + $(awk '{print $14}' "/proc/$p/stat"))); done; echo $t
}
hwm_kib() { local m=0; for p in "$@"; do v=$(awk '/VmHWM/ {print $2}' "/proc/$p/status"); m=$((m + v)); done; echo $m; }
rss_kib() { local m=0; for p in "$@"; do v=$(awk '/VmRSS/ {print $2}' "/proc/$p/status"); m=$((m + v)); done; echo $m; }
tck=$(getconf CLK_TCK)

declare -A results
# Every proxy runs from the start, side by side (all pinned to the same CPU;
# the idle ones cost nothing measurable), and the contenders take turns
# within each scenario of each round, in an order rotated per round and per
# scenario. The figures a ratio compares are then taken seconds apart, not
# minutes: this machine's speed drifts by 20% over minutes, the same for
# every contender.
for c in "${contenders[@]}"; do
  if [ "$c" != direct ]; then taskset -c "$proxy_cpus" ${start_cmd[$c]} >"$work/$c.log" 2>&1 & fi
done
sleep 1
declare -A pids_for
for c in "${contenders[@]}"; do
  pids_for[$c]=""; [ "$c" != direct ] && pids_for[$c]=$(pids_of "$c")
done
scenarios=()
for s in ${SCENARIOS:-small:50 small:256 4k:50 small:50:close 1m:10}; do scenarios+=("${s//:/ }"); done
for round in $(seq "$ROUNDS"); do
  for si in "${!scenarios[@]}"; do
    s=${scenarios[$si]}
    set -- $s; path=$1; conns=$2; close=${3:-}
    header=(); [ -n "$close" ] && header=(-H "Connection: close")
    order=()
    for i in $(seq 0 $((${#contenders[@]} - 1))); do
      order+=("${contenders[$(( (i + round - 1 + si) % ${#contenders[@]} ))]}")
    done
    for c in "${order[@]}"; do
      pids=${pids_for[$c]}
      url="http://127.0.0.1:${port[$c]}/$path"
      taskset -c "$load_cpus" wrk -t"$WORKERS" -c"$conns" -d2s "${header[@]}" "$url" >/dev/null 2>&1 || true  # warm-up
      before=$(cpu_ticks $pids); before_user=$(user_ticks $pids)
      out=$(taskset -c "$load_cpus" wrk -t"$WORKERS" -c"$conns" -d"${DURATION}s" --latency "${header[@]}" "$url")
      after=$(cpu_ticks $pids); after_user=$(user_ticks $pids)
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      to_ms='{ v=$2; if (v ~ /us$/) { sub(/us$/, "", v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v*=1000 }; printf "%.2f", v }'
      p50=$(echo "$out" | awk '$1=="50%"' | awk "$to_ms")
      p99=$(echo "$out" | awk '$1=="99%"' | awk "$to_ms")
      errors=$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')
      us=$(awk -v t=$((after - before)) -v r="$reqs" -v k="$tck" 'BEGIN { if (r > 0) printf "%.1f", t * 1000000 / k / r; else print "n/a" }')
      user=$(awk -v t=$((after_user - before_user)) -v r="$reqs" -v k="$tck" 'BEGIN { if (r > 0) printf "%.1f", t * 1000000 / k / r; else print "n/a" }')
      results["$c|$s|$round"]="$rps $p50 $p99 $us $(hwm_kib $pids) $user $errors"
    done
  done
done
for c in "${contenders[@]}"; do
  [ "$c" != direct ] && { kill ${pids_for[$c]} 2>/dev/null || true; }
done
sleep 1

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
if [ "$WORKERS" = 1 ]; then placement="proxy on CPU 1, wrk and the endpoint on CPU 0"; else placement="proxy with $WORKERS workers, wrk -t$WORKERS and the endpoint, none pinned"; fi
echo "$(date -u +%Y-%m-%d), $(nproc) cores, ROUNDS=$ROUNDS DURATION=${DURATION}s; $placement; contenders take turns within each scenario, order rotated"
for s in "${scenarios[@]}"; do
  set -- $s
  body=${1/small/12 B}; body=${body/1m/1 MiB}
  echo
  echo "### $body body, $2 connections${3:+, Connection: close (a new connection per request)}"
  echo
  echo "| contender | req/s | p50 | p99 | CPU µs/request | of it user | each round | peak RSS (KiB) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in "${contenders[@]}"; do
    col() { for r in $(seq "$ROUNDS"); do echo "${results[$c|$s|$r]}" | awk -v i="$1" '{print $i}'; done; }
    rps=$(col 1 | median); us=$(col 4 | median)
    p50=$(col 2 | median); p99=$(col 3 | median); rss=$(col 5 | median); user=$(col 6 | median)
    rounds=$(col 4 | paste -sd/ -)
    [ "$c" = direct ] && { us="-"; rss="-"; rounds="-"; user="-"; }
    echo "| $c | $rps | ${p50} ms | ${p99} ms | $us | $user | $rounds | $rss |"
  done
  # Each round's fulcrum figure against the best peer's of the same round
  # (taken seconds apart), and its p99 against nginx's.
  if [ -n "${results[fulcrum|$s|1]:-}" ]; then
    ratios=(); p99s=()
    for r in $(seq "$ROUNDS"); do
      f=$(echo "${results[fulcrum|$s|$r]}" | awk '{print $4}'); best=""
      for c in nginx haproxy; do
        [ -n "${results[$c|$s|$r]:-}" ] || continue
        v=$(echo "${results[$c|$s|$r]}" | awk '{print $4}')
        if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; fi
      done
      [ -n "$best" ] && ratios+=("$(awk -v a="$f" -v b="$best" 'BEGIN { printf "%.2f", a / b }')")
      if [ -n "${results[nginx|$s|$r]:-}" ]; then
        fp=$(echo "${results[fulcrum|$s|$r]}" | awk '{print $3}'); np=$(echo "${results[nginx|$s|$r]}" | awk '{print $3}')
        p99s+=("$(awk -v a="$fp" -v b="$np" 'BEGIN { printf "%.2f", a / b }')")
      fi
    done
    if [ ${#ratios[@]} -gt 0 ]; then
      echo
      echo "fulcrum / best peer, CPU per request, each round: $(IFS=/; echo "${ratios[*]}"); median $(printf '%s\n' "${ratios[@]}" | median)"
    fi
    if [ ${#p99s[@]} -gt 0 ]; then
      echo "fulcrum / nginx, p99, each round: $(IFS=/; echo "${p99s[*]}"); median $(printf '%s\n' "${p99s[@]}" | median)"
    fi
  fi
done

if [ -n "${ACCESS_LOG:-}" ]; then
  echo
  echo "Access log lines written: $(for f in "$work"/logs/*.log "$work"/haproxy.log; do [ -f "$f" ] && echo "$(basename "$f") $(wc -l < "$f")"; done | paste -sd, -)"
fi
[ "$IDLE" = 0 ] && exit 0
echo
echo "### $IDLE idle keep-alive client connections"
echo
echo "| contender | RSS before (KiB) | RSS with connections open (KiB) |"
echo "| --- | --- | --- |"
for c in "${contenders[@]}"; do
  [ "$c" = direct ] && continue
  taskset -c "$proxy_cpus" ${start_cmd[$c]} >"$work/$c.log" 2>&1 & sleep 1
  pids=$(pids_of "$c")
  before=$(rss_kib $pids)
  exec 3> >(python3 "$here/idle.py" 127.0.0.1 "${port[$c]}" "$IDLE" > "$work/idle.out")
  for _ in $(seq 120); do grep -q open "$work/idle.out" 2>/dev/null && break; sleep 0.5; done
  with=$(rss_kib $pids)
  exec 3>&-
  kill $pids 2>/dev/null || true; sleep 1
  echo "| $c | $before | $with |"
done
