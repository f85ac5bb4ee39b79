#!/usr/bin/env bash
# Side-by-side CPU cost per proxied request: nginx, HAProxy and fulcrum, each
# with one worker pinned to CPU 1; wrk and the nginx endpoint on CPU 0.
# Prints one markdown table per scenario (medians of ROUNDS rounds), the
# per-round ratios of fulcrum to the best peer, a summary table of every
# scenario, and the idle-connection memory table. Skips a peer that is not
# installed.
#
#   benches/e2e/run.sh            # ROUNDS=3 DURATION=10 by default
#   WORKERS=2 benches/e2e/run.sh  # each proxy with 2 workers, nothing pinned
#   ACCESS_LOG=1 benches/e2e/run.sh   # every proxy writes an access log to a
#                                     # file in the same directory (nginx:
#                                     # combined, HAProxy: httplog, fulcrum: json)
#   SCENARIOS="small:50 4k:50" IDLE=0 benches/e2e/run.sh   # some scenarios, no idle test
#   DEFER=1 benches/e2e/run.sh        # every contender defers accept (fulcrum
#                                     # `defer_accept = true`, nginx `listen ...
#                                     # deferred`, HAProxy `bind ... defer-accept`)
#   CANDIDATE=path/to/fulcrum benches/e2e/run.sh   # another fulcrum build as one
#                                     # more contender (ports 18085/18095), taking
#                                     # its turns with the others: "candidate /
#                                     # fulcrum" per round, an A/B in one run
#
# A scenario is PATH:CONNECTIONS[:MODE]: PATH is small (12 B), 4k or 1m
# (1 MiB) on the endpoint; MODE is
#   (none)     HTTP/1.1 keep-alive (wrk)
#   close      `Connection: close`: every request on a new TCP connection
#   tls        HTTPS keep-alive (wrk; TLS 1.3, a P-256 certificate)
#   tls-close  HTTPS with `Connection: close`: a full TLS handshake per
#              request (no session resumption: every contender has it off)
#   h2         HTTP/2 over TLS (h2load -c CONNECTIONS -m 10)
#   rate       HTTP/1.1 keep-alive at a fixed offered load, the same for every
#              contender: h2load --h1 with RATE requests per second on each
#              connection (1,000 by default; 50 connections: 50,000/s, about
#              half of what the load generator's CPU can send). The other
#              scenarios saturate, so their p99 also follows each
#              contender's request rate; this one compares latency at equal
#              load.
# Every scenario also gives the connections each proxy opened to the
# endpoint per 1,000 requests once warm (from 1 s into the run, counted by
# the endpoint's stub_status).
#   apt-get install nginx haproxy wrk nghttp2-client openssl   # the peers and the load generators
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
RATE=${RATE:-1000}
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
command -v openssl >/dev/null || { echo "openssl is not installed (apt-get install openssl)"; exit 1; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
chmod 755 "$work"   # nginx workers run unprivileged
head -c 4096 /dev/urandom > "$work/4k.bin" && chmod 644 "$work/4k.bin"
head -c 1048576 /dev/urandom > "$work/1m.bin" && chmod 644 "$work/1m.bin"
# One certificate for every contender's TLS listener (TLS 1.3 only).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/haproxy.pem"
chmod 644 "$work"/*.pem
for f in nginx-backend.conf nginx-proxy.conf haproxy.cfg; do
  sed "s|__DIR__|$work|g" "$here/$f" > "$work/$f"
done
# fulcrum watches its config's directory; the endpoint opens 4k.bin in
# $work on every request, and each open would wake the watcher's thread
# (which preempts the pinned worker). Its own directory, as in production.
mkdir -p "$work/fulcrum" && cp "$here/fulcrum.toml" "$work/fulcrum/"
printf '\n[[listener]]\nname = "bench-tls"\nbind = "127.0.0.1:18093"\n[listener.tls]\ncertificates = [{ cert = "%s", key = "%s" }]\nsession_resumption = false\n' \
  "$work/cert.pem" "$work/key.pem" >> "$work/fulcrum/fulcrum.toml"
sed -i "s/^worker_processes 1;/worker_processes $WORKERS;/" "$work/nginx-proxy.conf"
sed -i "s/^    nbthread 1/    nbthread $WORKERS/" "$work/haproxy.cfg"
sed -i "s/^workers = 1/workers = $WORKERS/" "$work/fulcrum/fulcrum.toml"
if [ -n "${DEFER:-}" ]; then
  sed -i "s/ backlog=4096;/ backlog=4096 deferred;/" "$work/nginx-proxy.conf"
  sed -i "s/^\(    bind 127.0.0.1:180[0-9]*\)/\1 defer-accept/" "$work/haproxy.cfg"
  sed -i "s/^\(bind = \"127.0.0.1:180[0-9]*\"\)$/\1\ndefer_accept = true/" "$work/fulcrum/fulcrum.toml"
fi
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
declare -A tls_port=([nginx]=18091 [haproxy]=18092 [fulcrum]=18093)
peers=(nginx haproxy fulcrum)
if [ -n "${CANDIDATE:-}" ]; then
  mkdir -p "$work/candidate"
  sed -e 's/18083/18085/; s/18093/18095/; s/fulcrum-access.log/candidate-access.log/' \
    "$work/fulcrum/fulcrum.toml" > "$work/candidate/fulcrum.toml"
  start_cmd[candidate]="$CANDIDATE -c $work/candidate/fulcrum.toml"
  port[candidate]=18085; tls_port[candidate]=18095
  peers+=(candidate)
fi
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

endpoint_accepts() { # connections the endpoint has accepted so far
  curl -s http://127.0.0.1:18080/nginx_status | awk 'NR == 3 {print $1}'
}
to_ms='{ v=$2; if (v ~ /us$/) { sub(/us$/, "", v); v/=1000 } else if (v ~ /ms$/) { sub(/ms$/, "", v) } else if (v ~ /s$/) { sub(/s$/, "", v); v*=1000 }; printf "%.2f", v }'
# Sends the load of one scenario to contender $1 for $5 seconds; prints
# "requests req/s p50 p99 errors" (latencies in ms).
load() {
  local c=$1 path=$2 conns=$3 mode=$4 secs=$5 url out
  if [ "$mode" = h2 ] || [ "$mode" = rate ]; then
    # h2load appends to its log: each run starts a new one.
    rm -f "$work/h2.log"
    if [ "$mode" = h2 ]; then
      url="https://127.0.0.1:${tls_port[$c]}/$path"
      out=$(taskset -c "$load_cpus" h2load -t"$WORKERS" -c"$conns" -m10 -D"$secs" --log-file="$work/h2.log" "$url")
    else
      url="http://127.0.0.1:${port[$c]}/$path"
      out=$(taskset -c "$load_cpus" h2load --h1 -t"$WORKERS" -c"$conns" -m1 --rps="$RATE" -D"$secs" --log-file="$work/h2.log" "$url")
    fi
    # The log: start (µs since the epoch), status, duration (µs).
    sort -n -k3 "$work/h2.log" | awk -v q="$(echo "$out" | awk '/^requests:/ {print $2}')" \
      -v rps="$(echo "$out" | awk '/^finished in/ {print $4}')" \
      -v failed="$(echo "$out" | awk '/^requests:/ {print $10 + $12 + $14}')" \
      '{ d[NR] = $3 } END { printf "%d %s %.2f %.2f", q, rps, d[int(NR * 0.5) + 1] / 1000, d[int(NR * 0.99) + 1] / 1000; if (failed > 0) printf " failed:%d", failed; print "" }'
    return
  fi
  local header=()
  case "$mode" in close | tls-close) header=(-H "Connection: close") ;; esac
  case "$mode" in
    tls | tls-close) url="https://127.0.0.1:${tls_port[$c]}/$path" ;;
    *) url="http://127.0.0.1:${port[$c]}/$path" ;;
  esac
  out=$(taskset -c "$load_cpus" wrk -t"$WORKERS" -c"$conns" -d"${secs}s" --latency "${header[@]}" "$url")
  echo "$(echo "$out" | awk '/requests in/ {print $1}') $(echo "$out" | awk '/Requests\/sec/ {print $2}')" \
    "$(echo "$out" | awk '$1=="50%"' | awk "$to_ms") $(echo "$out" | awk '$1=="99%"' | awk "$to_ms")" \
    "$(echo "$out" | awk '/Non-2xx|Socket errors/ {print}' | tr '\n' ' ')"
}

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
for s in ${SCENARIOS:-small:50 small:256 4k:50 small:50:rate small:50:close 1m:10 small:50:tls small:50:tls-close small:50:h2}; do scenarios+=("${s//:/ }"); done
for round in $(seq "$ROUNDS"); do
  for si in "${!scenarios[@]}"; do
    s=${scenarios[$si]}
    set -- $s; path=$1; conns=$2; mode=${3:-}
    order=()
    for i in $(seq 0 $((${#contenders[@]} - 1))); do
      order+=("${contenders[$(( (i + round - 1 + si) % ${#contenders[@]} ))]}")
    done
    for c in "${order[@]}"; do
      # No TLS listener on the endpoint itself, nor in the calibration proxy.
      if [ -n "$mode" ] && [ "$mode" != close ] && [ "$mode" != rate ] && [ -z "${tls_port[$c]:-}" ]; then continue; fi
      pids=${pids_for[$c]}
      load "$c" "$path" "$conns" "$mode" 2 >/dev/null 2>&1 || true  # warm-up
      # Endpoint connections are counted from 1 s into the run: the
      # warm-up's end cuts the exchanges in flight (their connections
      # close), and the run opens those again first.
      (sleep 1; endpoint_accepts > "$work/accepts") & counter=$!
      before=$(cpu_ticks $pids); before_user=$(user_ticks $pids)
      load "$c" "$path" "$conns" "$mode" "$DURATION" > "$work/load.out"
      after=$(cpu_ticks $pids); after_user=$(user_ticks $pids)
      wait "$counter"
      opened=$(( $(endpoint_accepts) - $(cat "$work/accepts") - 1 ))  # less the first count's own
      read -r reqs rps p50 p99 errors < "$work/load.out"
      us=$(awk -v t=$((after - before)) -v r="$reqs" -v k="$tck" 'BEGIN { if (r > 0) printf "%.1f", t * 1000000 / k / r; else print "n/a" }')
      user=$(awk -v t=$((after_user - before_user)) -v r="$reqs" -v k="$tck" 'BEGIN { if (r > 0) printf "%.1f", t * 1000000 / k / r; else print "n/a" }')
      per_1000=$(awk -v o="$opened" -v r="$reqs" -v d="$DURATION" 'BEGIN { if (r > 0) printf "%.2f", o * 1000 / (r * (d - 1) / d); else print "n/a" }')
      results["$c|$s|$round"]="$rps $p50 $p99 $us $(hwm_kib $pids) $user $per_1000 $errors"
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
[ -n "${DEFER:-}" ] && placement="$placement; every contender defers accept"
echo "$(date -u +%Y-%m-%d), $(nproc) cores, ROUNDS=$ROUNDS DURATION=${DURATION}s; $placement; contenders take turns within each scenario, order rotated"
declare -A summary
for s in "${scenarios[@]}"; do
  set -- $s
  body=${1/small/12 B}; body=${body/1m/1 MiB}
  case "${3:-}" in
    close) how="Connection: close (a new connection per request)" ;;
    tls) how="HTTPS keep-alive" ;;
    tls-close) how="HTTPS with Connection: close (a full TLS handshake per request)" ;;
    h2) how="HTTP/2 over TLS, h2load -m 10" ;;
    rate) how="HTTP/1.1 keep-alive at $(( $2 * RATE )) requests/s (h2load --h1 --rps $RATE)" ;;
    *) how="HTTP/1.1 keep-alive" ;;
  esac
  title="$body body, $2 connections, $how"
  echo
  echo "### $title"
  echo
  echo "| contender | req/s | p50 | p99 | CPU µs/request | of it user | each round | endpoint connections per 1,000 requests | peak RSS (KiB) |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for c in "${contenders[@]}"; do
    [ -n "${results[$c|$s|1]:-}" ] || continue
    col() { for r in $(seq "$ROUNDS"); do echo "${results[$c|$s|$r]}" | awk -v i="$1" '{print $i}'; done; }
    rps=$(col 1 | median); us=$(col 4 | median)
    p50=$(col 2 | median); p99=$(col 3 | median); rss=$(col 5 | median); user=$(col 6 | median)
    opened=$(col 7 | median)
    rounds=$(col 4 | paste -sd/ -)
    [ "$c" = direct ] && { us="-"; rss="-"; rounds="-"; user="-"; opened="-"; }
    echo "| $c | $rps | ${p50} ms | ${p99} ms | $us | $user | $rounds | $opened | $rss |"
    summary["$c|$s"]="$us $p99 $opened"
  done
  # Each round's fulcrum figure against the best peer's of the same round
  # (taken seconds apart), and its p99 against the best peer's p99.
  ratio="-"; p99_ratio="-"
  if [ -n "${results[fulcrum|$s|1]:-}" ]; then
    ratios=(); p99s=()
    for r in $(seq "$ROUNDS"); do
      f=$(echo "${results[fulcrum|$s|$r]}" | awk '{print $4}'); best=""
      fp=$(echo "${results[fulcrum|$s|$r]}" | awk '{print $3}'); best_p99=""
      for c in nginx haproxy; do
        [ -n "${results[$c|$s|$r]:-}" ] || continue
        v=$(echo "${results[$c|$s|$r]}" | awk '{print $4}')
        if [ -z "$best" ] || awk -v a="$v" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$v; fi
        v=$(echo "${results[$c|$s|$r]}" | awk '{print $3}')
        if [ -z "$best_p99" ] || awk -v a="$v" -v b="$best_p99" 'BEGIN { exit !(a < b) }'; then best_p99=$v; fi
      done
      [ -n "$best" ] && ratios+=("$(awk -v a="$f" -v b="$best" 'BEGIN { printf "%.2f", a / b }')")
      [ -n "$best_p99" ] && p99s+=("$(awk -v a="$fp" -v b="$best_p99" 'BEGIN { printf "%.2f", a / b }')")
    done
    if [ ${#ratios[@]} -gt 0 ]; then
      ratio=$(printf '%s\n' "${ratios[@]}" | median)
      echo
      echo "fulcrum / best peer, CPU per request, each round: $(IFS=/; echo "${ratios[*]}"); median $ratio"
    fi
    if [ ${#p99s[@]} -gt 0 ]; then
      p99_ratio=$(printf '%s\n' "${p99s[@]}" | median)
      echo "fulcrum / best peer's p99, each round: $(IFS=/; echo "${p99s[*]}"); median $p99_ratio"
    fi
  fi
  if [ -n "${results[candidate|$s|1]:-}" ] && [ -n "${results[fulcrum|$s|1]:-}" ]; then
    ab=()
    for r in $(seq "$ROUNDS"); do
      a=$(echo "${results[candidate|$s|$r]}" | awk '{print $4}')
      b=$(echo "${results[fulcrum|$s|$r]}" | awk '{print $4}')
      ab+=("$(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')")
    done
    echo "candidate / fulcrum, CPU per request, each round: $(IFS=/; echo "${ab[*]}"); median $(printf '%s\n' "${ab[@]}" | median)"
  fi
  summary["ratio|$s"]="$ratio $p99_ratio"
  summary["title|$s"]=$title
done

# One line per scenario: the medians of the tables above.
echo
echo "### Summary: CPU µs per request (median), fulcrum against the best peer"
echo
echo "| scenario | nginx | HAProxy | fulcrum | fulcrum / best (CPU) | fulcrum / best (p99) | endpoint connections per 1,000 requests (nginx / HAProxy / fulcrum) |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for s in "${scenarios[@]}"; do
  cell() { echo "${summary[$1|$s]:--}" | awk -v i="$2" '{print $i}'; }
  read -r ratio p99_ratio <<< "${summary[ratio|$s]}"
  echo "| ${summary[title|$s]} | $(cell nginx 1) | $(cell haproxy 1) | $(cell fulcrum 1) | $ratio | $p99_ratio | $(cell nginx 3) / $(cell haproxy 3) / $(cell fulcrum 3) |"
done
echo

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
