#!/usr/bin/env bash
# Boundary-node router benchmark (docs/BENCHMARKS.md): queries/s and update
# calls/s through icos-boundary, p50/p99 latency added over calling a replica
# directly, and the router's peak RSS, side by side in the same run with
# nginx (Debian package) as a plain reverse proxy in front of the same
# testnet replicas.
#
#   scripts/bench-boundary.sh
#
# Environment:
#   W=DIR          work folder [/var/tmp/icos-bench-boundary]
#   DURATION=15s   length of each load run
#   CONNS=32       concurrent connections of the load generator
#   ROUNDS=3       rounds; each round runs every target once, in turn
#   OHA=FILE       the load generator [installed with cargo install oha]
#   KINDS="query call"  request kinds to run
#   ROUTER=FILE    the router binary [target/release/icos-boundary]
#   BUILD=0        use the release binaries already built
#   ROUTER_ARGS="..."  more flags for the router (e.g. --worker-threads 1)
#   METRICS=1      serve the router's metrics (default: off; requests are
#                  counted either way)
#   PERF=1         profile the router (perf record -g, 5 s) during the first
#                  round's peak query run; report in $W/perf-router.txt
#   PIN=1          give the proxy a core of its own: the router and nginx
#                  (one worker) run on CPU 1, the load generator and the
#                  replicas on CPU 0 (taskset), so that latency measures the
#                  proxy rather than its competition with the load
#                  generator for the same core
#
# Targets, all on loopback: one testnet replica directly ("direct"); the
# router in front of the 4 replicas of one subnet ("router"); nginx with an
# upstream of the same 4 replicas, keep-alive, 2 workers ("nginx"). Requests:
# an anonymous query of the counter canister (`read`) and an update call
# (`inc`, v3 synchronous) made once by `icos-testnet-replica envelope`; the
# router's query cache is off (its default), so every query is decoded,
# routed and forwarded. Results: $W/results.tsv and one oha JSON per run;
# column cpu_us is the CPU time (user + system) the target's own processes
# spent per request during the run, which depends far less on what else
# runs on the machine than requests/s do.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=${W:-/var/tmp/icos-bench-boundary}
DURATION=${DURATION:-15s}
CONNS=${CONNS:-32}
ROUNDS=${ROUNDS:-3}
KINDS=${KINDS:-query call}
PORT_BASE=${PORT_BASE:-19100}
ROUTER_PORT=$((PORT_BASE - 10))
NGINX_PORT=$((PORT_BASE - 9))

mkdir -p "$W"
cd "$REPO"
if [ "${PIN:-0}" = 1 ]; then
  [ "$(nproc)" -ge 2 ] || { echo "PIN=1 needs two cores" >&2; exit 2; }
  CLIENT=(taskset -c 0)
  PROXY=(taskset -c 1)
  NGINX_WORKERS=1
else
  CLIENT=()
  PROXY=()
  NGINX_WORKERS=2
fi
log() { printf '== %s\n' "$*" >&2; }

if ! command -v nginx >/dev/null 2>&1; then
  log "installing nginx-light"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light
fi
OHA=${OHA:-$(command -v oha || echo "$W/tools/bin/oha")}
if [ ! -x "$OHA" ]; then
  log "installing oha into $W/tools"
  cargo install oha --locked --root "$W/tools" >&2
  OHA=$W/tools/bin/oha
fi

if [ "${BUILD:-1}" = 1 ]; then
  log "building the router and the testnet replica (release)"
  cargo build --release --locked -p icos-boundary-bin -p icos-testnet-replica-bin >&2
fi
BIN=$REPO/target/release
ROUTER=${ROUTER:-$BIN/icos-boundary}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$W/nginx/nginx.pid" ]; then kill "$(cat "$W/nginx/nginx.pid")" 2>/dev/null || true; fi
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A testnet of one subnet with 4 nodes.
cat > "$W/testnet.json" <<'EOF'
{
  "root_key_seed": "62656e63686d61726b2074657374696e67",
  "subnets": [
    {"id": "tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe",
     "canister_ranges": [["rwlgt-iiaaa-aaaaa-aaaaa-cai", "renrk-eyaaa-aaaaa-aaada-cai"]],
     "nodes": 4}
  ]
}
EOF
SUBNET=tdb26-jop6k-aogll-7ltgs-eruif-6kk7m-qpktf-gdiqx-mxtrf-vb5e6-eqe
COUNTER=rwlgt-iiaaa-aaaaa-aaaaa-cai
for i in 0 1 2 3; do
  "${CLIENT[@]}" "$BIN/icos-testnet-replica" serve --config "$W/testnet.json" --subnet "$SUBNET" \
    --node-index "$i" --listen "127.0.0.1:$((PORT_BASE + i))" 2>"$W/replica-$i.log" &
  pids+=($!)
done
"$BIN/icos-testnet-replica" routing-table --config "$W/testnet.json" --port-base "$PORT_BASE" >"$W/table.json"
if [ "${METRICS:-0}" = 1 ]; then
  metrics_flags=(--obs-metrics-addr "127.0.0.1:$((PORT_BASE - 8))")
else
  metrics_flags=(--obs-disable-metrics)
fi
"${PROXY[@]}" "$ROUTER" --routing-table "$W/table.json" --listen "127.0.0.1:$ROUTER_PORT" \
  "${metrics_flags[@]}" ${ROUTER_ARGS:-} 2>"$W/router.log" &
router_pid=$!
pids+=("$router_pid")

mkdir -p "$W/nginx"
cat > "$W/nginx/nginx.conf" <<EOF
worker_processes $NGINX_WORKERS;
pid $W/nginx/nginx.pid;
error_log $W/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $W/nginx/body;
  proxy_temp_path $W/nginx/proxy;
  fastcgi_temp_path $W/nginx/fastcgi;
  uwsgi_temp_path $W/nginx/uwsgi;
  scgi_temp_path $W/nginx/scgi;
  client_max_body_size 4m;
  upstream subnet {
    server 127.0.0.1:$PORT_BASE;
    server 127.0.0.1:$((PORT_BASE + 1));
    server 127.0.0.1:$((PORT_BASE + 2));
    server 127.0.0.1:$((PORT_BASE + 3));
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://subnet;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF
"${PROXY[@]}" nginx -c "$W/nginx/nginx.conf"

# Wait until the router routes (first health checks) and nginx answers.
for _ in $(seq 100); do
  if curl -fsS "http://127.0.0.1:$ROUTER_PORT/health" >/dev/null 2>&1 &&
     curl -fsS "http://127.0.0.1:$NGINX_PORT/api/v2/status" >/dev/null 2>&1; then
    break
  fi
  sleep 0.2
done

# Envelopes expire after at most 6 minutes: make them per round.
envelopes() {
  "$BIN/icos-testnet-replica" envelope --kind query --canister "$COUNTER" --method read -o "$W/query.cbor" >/dev/null
  "$BIN/icos-testnet-replica" envelope --kind call --canister "$COUNTER" --method inc -o "$W/call.cbor" >/dev/null
}

url() { # target kind
  local port path
  case $1 in
    direct) port=$PORT_BASE ;;
    router) port=$ROUTER_PORT ;;
    nginx) port=$NGINX_PORT ;;
  esac
  case $2 in
    query) path=query ;;
    call) path=call ;;
  esac
  local v=v2
  [ "$2" = call ] && v=v3
  echo "http://127.0.0.1:$port/api/$v/canister/$COUNTER/$path"
}

# CPU time (user + system, clock ticks) used so far by a target's own
# processes: replica 0 for direct, the router, nginx's master and workers.
target_pids() {
  case $1 in
    direct) echo "${pids[0]}" ;;
    router) echo "$router_pid" ;;
    nginx) cat "$W/nginx/nginx.pid"; pgrep -P "$(cat "$W/nginx/nginx.pid")" || true ;;
  esac
}
cpu_ticks() {
  local t=0 p v
  for p in $(target_pids "$1"); do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends
    # the command name.
    v=$(sed 's/.*) //' "/proc/$p/stat" | awk '{print $12 + $13}')
    t=$((t + v))
  done
  echo "$t"
}
TICK=$(getconf CLK_TCK)
# All CPUs' time so far from /proc/stat: "steal total" in clock ticks. Steal
# is time the hypervisor ran something else while this machine's vCPUs had
# work: a vCPU stalled that way delays every request it holds, so a run
# with steal measures the host, not the proxy.
steal_total() { awk '/^cpu /{t=0; for (i=2;i<=NF;i++) t+=$i; print $9, t}' /proc/stat; }

# oha run: target kind label [extra args]; prints
# "rps p50_ms p99_ms ok_ratio cpu_us_per_request steal_pct"
run() {
  local target=$1 kind=$2 label=$3
  shift 3
  local out="$W/oha-$label-$target-$kind.json"
  local before after s0 t0 s1 t1
  read -r s0 t0 < <(steal_total)
  before=$(cpu_ticks "$target")
  "${CLIENT[@]}" "$OHA" -z "$DURATION" -c "$CONNS" -m POST -T application/cbor -D "$W/$kind.cbor" \
    --no-tui --output-format json "$@" "$(url "$target" "$kind")" >"$out"
  after=$(cpu_ticks "$target")
  read -r s1 t1 < <(steal_total)
  python3 - "$out" "$((after - before))" "$TICK" "$((s1 - s0))" "$((t1 - t0))" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
s = d["summary"]; p = d["latencyPercentiles"]
codes = d.get("statusCodeDistribution", {})
ok = sum(v for k, v in codes.items() if k.startswith("2"))
total = sum(codes.values()) or 1
cpu_us = int(sys.argv[2]) / int(sys.argv[3]) * 1e6 / total
steal = 100 * int(sys.argv[4]) / max(int(sys.argv[5]), 1)
print(f'{s["requestsPerSec"]:.0f} {p["p50"]*1000:.3f} {p["p99"]*1000:.3f} {ok/total:.4f} {cpu_us:.1f} {steal:.2f}')
PY
}

load() { awk '{print $1}' /proc/loadavg; }

printf 'round\tphase\ttarget\tkind\trps\tp50_ms\tp99_ms\tok_ratio\tcpu_us\tsteal_pct\tload1\n' >"$W/results.tsv"
for r in $(seq "$ROUNDS"); do
  envelopes
  for kind in $KINDS; do
    declare -A peak=()
    for target in direct router nginx; do
      if [ "${PERF:-0}" = 1 ] && [ "$r" = 1 ] && [ "$target" = router ] && [ "$kind" = query ]; then
        (sleep 2 && perf record -q -g -o "$W/perf-router.data" -p "$router_pid" -- sleep 5 >/dev/null 2>&1) &
      fi
      read -r rps p50 p99 ok cpu steal < <(run "$target" "$kind" "peak-r$r")
      peak[$target]=$rps
      printf '%s\tpeak\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$target" "$kind" "$rps" "$p50" "$p99" "$ok" "$cpu" "$steal" "$(load)" | tee -a "$W/results.tsv" >&2
    done
    # Latency at half of the router's peak rate, the same rate for all three.
    rate=$(( ${peak[router]} / 2 ))
    for target in direct router nginx; do
      read -r rps p50 p99 ok cpu steal < <(run "$target" "$kind" "half-r$r" -q "$rate")
      printf '%s\thalf@%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$rate" "$target" "$kind" "$rps" "$p50" "$p99" "$ok" "$cpu" "$steal" "$(load)" | tee -a "$W/results.tsv" >&2
    done
    unset peak
  done
done

rss=$(awk '/VmHWM/{print $2}' "/proc/$router_pid/status")
if [ -f "$W/perf-router.data" ]; then
  {
    perf report -q -i "$W/perf-router.data" --no-children --sort dso --stdio -g none
    echo
    perf report -q -i "$W/perf-router.data" --no-children --sort dso,symbol --percent-limit 0.5 \
      --stdio -g none
  } 2>/dev/null | sed -E 's/[[:space:]]+-[[:space:]]+-[[:space:]]*$//; s/[[:space:]]+$//' >"$W/perf-router.txt" || true
  rm -f "$W/perf-router.data"*
  log "router profile: $W/perf-router.txt"
fi
printf 'router peak RSS (VmHWM): %s KiB\n' "$rss" | tee "$W/rss.txt" >&2
nginx_rss=0
for p in $(target_pids nginx); do
  v=$(awk '/VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  nginx_rss=$((nginx_rss + v))
done
printf 'nginx peak RSS (VmHWM, master + workers): %s KiB\n' "$nginx_rss" | tee -a "$W/rss.txt" >&2
printf 'pinned: %s\n' "${PIN:-0}" | tee -a "$W/rss.txt" >&2
printf 'machine: %s cores, %s\n' "$(nproc)" "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" | tee -a "$W/rss.txt" >&2
