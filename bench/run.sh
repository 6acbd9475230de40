#!/usr/bin/env bash
# doorman's benchmark: real nginx (one worker) driven by wrk (16 connections)
# against a static file behind five kinds of protection, alternated within one
# run, then webhook ingest, the ack-to-403 latency and memory. See
# docs/benchmarks.md for what each figure means. The Go floor runs twice:
# with fasthttp's defaults (3) and as the leanest server (3l: no Server, Date
# or Content-Type header); doorman's /forward-auth is asked through nginx too
# (4f, auth_request allows on any 2xx). Variant 7 is the cached mode
# (docs/nginx.md): the shipped doorman-cache.conf and
# doorman-location-cached.conf in front of a doorman with
# DOORMAN_NGINX_REFRESH_URLS; after the rounds, bench/cachelat times what the
# refresh adds to a banning webhook call. The paired variants (4p, 4fp, 5p;
# 4abp with BENCH_DOORMAN_B) put the lean floor and doorman behind one
# upstream, so nginx's round robin gives each half of the same wrk run: each
# one's CPU per request is compared within the run (run_pair).
#
# usage: bench/run.sh [http] [ingest] [memory]      (default: all three)
#
#   BENCH_SECONDS=5     seconds per variant per round
#   BENCH_ROUNDS=3      rounds; each round runs every variant once, in turn
#   BENCH_QUICK=1       smoke run: 1 s, 1 round, small tables (CI)
#   BENCH_OUT=DIR       where results go (default: a new temp dir, printed)
#   BENCH_CHART=FILE    the CPU-per-request chart (default: BENCH_OUT/cpu.png)
#   BENCH_DOORMAN_B=BIN a second doorman binary (e.g. a candidate change): its
#                       allow path runs as variant 4b in the same rounds
#   BENCH_WRK_THREADS=2 wrk's threads (-t); 1 leaves more of a 2-core machine
#                       to nginx and the sidecar
#   BENCH_BANS=N        active bans loaded into each doorman (default 100000,
#                       10000 with BENCH_QUICK)
#   BENCH_VARIANTS=RE   run only the http variants whose label matches the
#                       extended regex RE (e.g. '^4p|^4abp' for the pairs)
#   BENCH_PERF=1        after the rounds, profile the allow pairs (4p, 4abp)
#                       once more with perf(1) (Debian: linux-perf): each
#                       symbol's CPU per request for A and B, in results.md
#
# Needs nginx, wrk, gnuplot (Debian: nginx, wrk, gnuplot-nox), python3 and Go.
# Traffic goes to loopback only. Every process started here is stopped on exit.
set -euo pipefail
export PATH=/usr/local/go/bin:$PATH:/usr/sbin:/sbin
repo=$(cd "$(dirname "$0")/.." && pwd)

parts=${*:-http ingest memory}
if [ "${BENCH_QUICK:-0}" = 1 ]; then
  secs=${BENCH_SECONDS:-1}; rounds=${BENCH_ROUNDS:-1}
  nprefix=100000; nbans=10000; ingest_d=1s; acktrials=20; mem_bans=50000; mem_fail=100000
else
  secs=${BENCH_SECONDS:-5}; rounds=${BENCH_ROUNDS:-3}
  nprefix=100000; nbans=100000; ingest_d=5s; acktrials=500; mem_bans=1000000; mem_fail=2000000
fi
nbans=${BENCH_BANS:-$nbans}
out=${BENCH_OUT:-$(mktemp -d /tmp/doorman-bench.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
chart=${BENCH_CHART:-$out/cpu.png}
work=$(mktemp -d /tmp/doorman-bench-work.XXXXXX)
for tool in nginx wrk gnuplot python3 go curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool not found (Debian: nginx wrk gnuplot-nox python3 curl; Go at /usr/local/go)" >&2; exit 1; }
done

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
log() { echo "bench: $*" >&2; }
die() { log "$*"; exit 1; }

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cpu_ticks() { # utime+stime of the given pids, in clock ticks
  local t=0 p f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue  # nginx's cache loader exits once done
    read -r -a f <"/proc/$p/stat"  # the comm field has no spaces here
    t=$((t + f[13] + f[14]))
  done
  echo "$t"
}
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# wait_http URL: poll until it answers (any status), 15 s at most.
wait_http() {
  for _ in $(seq 150); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.1
  done
  die "no answer from $1"
}
status_of() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$@"; }

log "building into $work"
# bench/ is a module of its own, so doorman's go.mod lists only what doorman runs on.
(cd "$repo" && go build -o "$work/doorman" .)
(cd "$repo/bench" && go build -o "$work/floor" ./floor && go build -o "$work/load" ./load && go build -o "$work/cachelat" ./cachelat)
"$work/load" lists -dir "$work" -deny "$nprefix" -allow 1000

# start_doorman NAME DECIDE_ADDR API_PORT [VAR=value ...]: memory-only unless
# a DOORMAN_STATE_FILE is passed; logs to $work/NAME.log. $bin overrides the binary.
start_doorman() {
  local name=$1 dec=$2 api=$3; shift 3
  env DOORMAN_STATE_FILE= DOORMAN_DECIDE_ADDR="$dec" DOORMAN_API_ADDR="127.0.0.1:$api" "$@" \
    "${bin:-$work/doorman}" >"$work/$name.log" 2>&1 &
  pids+=($!)
  eval "pid_$name=$!"
  wait_http "http://127.0.0.1:$api/healthz"
}

# decisions API_PORT: the decisions a doorman has answered.
decisions() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^doorman_decisions_total/ { s += $NF } END { printf "%.0f", s }'; }
# cpu_ns PID: the CPU time of PID's threads in ns (schedstat; Go threads do
# not exit here, so none is lost). %.0f: mawk's %d is 32 bits.
cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{ s += $1 } END { printf "%.0f", s }'; }

# run_pair LABEL ROUND LOCATION "PID_A API_A PID_B API_B": one paired
# variant. A and B are the two servers of one upstream: nginx's round robin
# sends them every other auth subrequest of one wrk run, so both serve the
# same load at the same moments and the drift between variants run one
# after another (docs/benchmarks.md) cancels. Prints a row: requests, non-2xx,
# each one's requests (B's and, when it has one, A's from their metrics; the
# lean floor's as wrk's total less B's) and CPU ns.
run_pair() {
  local label=$1 round=$2 loc=$3 pa apia pb apib
  read -r pa apia pb apib <<<"$4"
  local url="http://127.0.0.1:$port/$loc/index.html" a0=0 a1=0 b0 b1 ta0 ta1 tb0 tb1 req non
  status_of "$url" >/dev/null
  [ "$apia" = - ] || a0=$(decisions "$apia")
  b0=$(decisions "$apib"); ta0=$(cpu_ns "$pa"); tb0=$(cpu_ns "$pb")
  wrk -t"${BENCH_WRK_THREADS:-2}" -c16 -d"${secs}s" "$url" >"$work/wrk.out" 2>&1 || die "wrk failed: $(cat "$work/wrk.out")"
  ta1=$(cpu_ns "$pa"); tb1=$(cpu_ns "$pb")
  sleep 0.2  # the subrequests wrk left in flight
  [ "$apia" = - ] || a1=$(decisions "$apia")
  b1=$(decisions "$apib")
  req=$(awk '/ requests in / { print $1 }' "$work/wrk.out")
  non=$(awk '/Non-2xx or 3xx responses:/ { print $5 }' "$work/wrk.out")
  local nb=$((b1 - b0)) na=$((a1 - a0))
  [ "$apia" != - ] || na=$((req - nb))
  [ "$na" -gt 0 ] && [ "$nb" -gt 0 ] || die "$label: requests split $na/$nb"
  printf '%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d\n' "$label" "$round" "$req" "${non:-0}" "$na" "$nb" $((ta1 - ta0)) $((tb1 - tb0))
}

# perf_pair LABEL LOCATION "PID_A API_A PID_B API_B": one more wrk run of a
# paired variant under perf record (no call graphs: self time only), then a
# table of the symbols whose CPU per request differs most between A and B.
# A symbol's ns per request is its share of its process's samples times that
# process's CPU ns over its requests; kernel symbols are the process's own
# system time.
perf_pair() {
  local label=$1 loc=$2 pa pb row
  read -r pa _ pb _ <<<"$3"
  row=$(run_pair "$label" 0 "$loc" "$3" &
    sleep 0.5
    perf record -q -F 2000 -p "$pa" -o "$work/perf-a.data" -- sleep "$((secs - 1))" >/dev/null 2>&1 &
    perf record -q -F 2000 -p "$pb" -o "$work/perf-b.data" -- sleep "$((secs - 1))" >/dev/null 2>&1
    wait)
  [ -s "$work/perf-a.data" ] && [ -s "$work/perf-b.data" ] || die "$label: perf recorded nothing"
  echo "#### $label under perf: ns per request by symbol, the 15 that differ most (B − A)"
  echo
  echo "| symbol | A ns/req | B ns/req | B − A |"
  echo "|---|---:|---:|---:|"
  { perf report -i "$work/perf-a.data" --no-children --sort sym --stdio 2>/dev/null | sed 's/^/A /'
    perf report -i "$work/perf-b.data" --no-children --sort sym --stdio 2>/dev/null | sed 's/^/B /'
  } | awk -v row="$row" '
    BEGIN { split(row, f, "\t"); per["A"] = f[7] / f[5]; per["B"] = f[8] / f[6] }
    $2 ~ /^[0-9.]+%$/ { w = $1; pct = $2 + 0; sym = $0; sub(/^[AB] +[0-9.]+% +/, "", sym)
      tot[w] += pct; s[w, sym] += pct; syms[sym] = 1 }
    END {
      for (x in syms) { a = tot["A"] ? s["A", x] / tot["A"] * per["A"] : 0; b = tot["B"] ? s["B", x] / tot["B"] * per["B"] : 0
        d = b - a; printf "%.1f\t| `%s` | %.0f | %.0f | %+.0f |\n", (d < 0 ? -d : d), x, a, b, d }
    }' | sort -t$'\t' -k1,1 -rn | awk -F'\t' 'NR <= 15 { print $2 }'
  awk -v row="$row" 'BEGIN { split(row, f, "\t"); printf "| whole process | %.0f | %.0f | %+.0f |\n\n", f[7] / f[5], f[8] / f[6], f[8] / f[6] - f[7] / f[5] }'
}

# pair_summary TSV CPU_DAT: each paired variant's B ÷ A CPU per request and
# B − A in ns, per round and the median over rounds, with B's share of the
# requests. Each of a pair serves half the rate, so both cost more per
# request than alone; the last column puts the median B − A on the lean
# floor measured alone (3l, from CPU_DAT): (3l + (B − A)) ÷ 3l.
pair_summary() {
  echo "### paired: A and B behind one upstream, nginx's round robin, in the same wrk run"
  echo
  echo "| variant | A | B | B's share of requests | A ns/req | B ns/req | B − A ns/req, median | B ÷ A, median | B ÷ A, each round | (3l + (B − A)) ÷ 3l |"
  echo "|---|---|---|---:|---:|---:|---:|---:|---|---:|"
  awk -F'\t' '
    FILENAME == ARGV[1] { floor[$1] = $3 * 1000; next }
    FNR == 1 { next }
    !($1 in seen) { seen[$1] = 1; order[++n] = $1 }
    { k = ++cnt[$1]; a = $7 / $5; b = $8 / $6; r[$1, k] = b / a; d[$1, k] = b - a
      na[$1] += $5; nb[$1] += $6; ca[$1] += $7; cb[$1] += $8 }
    function med(arr, v, m,   j, l, t, x) { for (j = 1; j <= m; j++) x[j] = arr[v, j]
      for (j = 1; j <= m; j++) for (l = j + 1; l <= m; l++) if (x[l] < x[j]) { t = x[j]; x[j] = x[l]; x[l] = t }
      return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2 }
    END {
      for (i = 1; i <= n; i++) { v = order[i]; m = cnt[v]; list = ""
        for (j = 1; j <= m; j++) list = list sprintf("%s%.2f", j > 1 ? " " : "", r[v, j])
        tr = v; sub(/^.*-/, "", tr); f = floor["3l-fasthttp-lean-204-" tr]; dm = med(d, v, m)
        a = v ~ /^4abp/ ? "doorman" : "lean floor (3l)"; b = v ~ /^4abp/ ? "doorman B" : "doorman"
        printf "| %s | %s | %s | %.3f | %.0f | %.0f | %.0f | %.2f | %s | %s |\n", v, a, b, nb[v] / (na[v] + nb[v]),
          ca[v] / na[v], cb[v] / nb[v], dm, med(r, v, m), list, (f > 0 ? sprintf("**%.2f**", (f + dm) / f) : "") }
    }' "$2" "$1"
  echo
}

results=$out/results.md
: >"$results"

# ---------------------------------------------------------------- http
run_http() {
  local port ftcp fltcp dtcp_api dunix_api dtcp
  port=$(freeport); ftcp=$(freeport); fltcp=$(freeport); dtcp=$(freeport); dtcp_api=$(freeport); dunix_api=$(freeport)
  local fsock=$work/floor.sock flsock=$work/floor-lean.sock dsock=$work/decide.sock

  "$work/floor" "127.0.0.1:$ftcp" & pids+=($!); pid_floor_tcp=$!
  "$work/floor" "unix:$fsock" & pids+=($!); pid_floor_unix=$!
  "$work/floor" -lean "127.0.0.1:$fltcp" & pids+=($!); pid_floorlean_tcp=$!
  "$work/floor" -lean "unix:$flsock" & pids+=($!); pid_floorlean_unix=$!
  # nginx reaches the TCP sidecars from 127.0.0.2 (proxy_bind below), the
  # only trusted proxy: wrk's 127.0.0.1 is then a client that X-Forwarded-For
  # can name (a trusted address would be skipped as a proxy hop).
  local lists=(DOORMAN_DENY_FILE="$work/deny.txt" DOORMAN_ALLOW_FILE="$work/allow.txt" DOORMAN_LOG_LEVEL=warn
    DOORMAN_TRUSTED_PROXIES=127.0.0.2/32)
  start_doorman dm_tcp "127.0.0.1:$dtcp" "$dtcp_api" "${lists[@]}"
  start_doorman dm_unix "unix:$dsock" "$dunix_api" "${lists[@]}"
  local apis=("$dtcp_api" "$dunix_api") sidecars=(floor_tcp:127.0.0.1:$ftcp floor_unix:unix:$fsock floorlean_tcp:127.0.0.1:$fltcp
    floorlean_unix:unix:$flsock dm_tcp:127.0.0.1:$dtcp dm_unix:unix:$dsock)
  if [ -n "${BENCH_DOORMAN_B:-}" ]; then
    local btcp btcp_api bunix_api; btcp=$(freeport); btcp_api=$(freeport); bunix_api=$(freeport)
    bin=$BENCH_DOORMAN_B start_doorman dm_b_tcp "127.0.0.1:$btcp" "$btcp_api" "${lists[@]}"
    bin=$BENCH_DOORMAN_B start_doorman dm_b_unix "unix:$work/decide-b.sock" "$bunix_api" "${lists[@]}"
    apis+=("$btcp_api" "$bunix_api"); sidecars+=(dm_b_tcp:127.0.0.1:$btcp dm_b_unix:unix:$work/decide-b.sock)
  fi
  # Paired variants (run_pair): NAME ADDR_A PID_A API_A ADDR_B PID_B API_B,
  # one upstream holding A and B. A is the lean floor (no API: "-"), or with
  # BENCH_DOORMAN_B the first doorman, B the second.
  local pairs=("pair_tcp 127.0.0.1:$fltcp $pid_floorlean_tcp - 127.0.0.1:$dtcp $pid_dm_tcp $dtcp_api"
    "pair_unix unix:$flsock $pid_floorlean_unix - unix:$dsock $pid_dm_unix $dunix_api")
  if [ -n "${BENCH_DOORMAN_B:-}" ]; then
    pairs+=("pair_ab_tcp 127.0.0.1:$dtcp $pid_dm_tcp $dtcp_api 127.0.0.1:$btcp $pid_dm_b_tcp $btcp_api"
      "pair_ab_unix unix:$dsock $pid_dm_unix $dunix_api unix:$work/decide-b.sock $pid_dm_b_unix $bunix_api")
  fi
  # Variant 7, cached mode: its own doorman (same lists, plus 127.30.0.0/16
  # allowed for bench/cachelat's addresses), refreshing this nginx.
  local cached_api; cached_api=$(freeport)
  { cat "$work/allow.txt"; echo 127.30.0.0/16; } >"$work/allow-cached.txt"
  start_doorman dm_cached "unix:$work/decide-cached.sock" "$cached_api" DOORMAN_DENY_FILE="$work/deny.txt" \
    DOORMAN_ALLOW_FILE="$work/allow-cached.txt" DOORMAN_LOG_LEVEL=warn DOORMAN_RANGE_THRESHOLD=0 \
    DOORMAN_NGINX_REFRESH_URLS="http://127.0.0.1:$port/_doorman_refresh"
  apis+=("$cached_api")
  log "loading $nbans bans into each doorman"
  for a in "${apis[@]}"; do
    "$work/load" bans -api "127.0.0.1:$a" -n "$nbans" -c 32 >&2
  done
  for a in "${apis[@]}"; do
    curl -s "http://127.0.0.1:$a/metrics" | grep -E '^doorman_(bans_active|list_prefixes)' | tr '\n' ' ' >&2; echo >&2
  done

  # nginx: the shipped upstream and location snippets, renamed per sidecar.
  mkdir -p "$work/nginx/www" "$work/nginx/tmp"
  head -c 612 /dev/zero | tr '\0' 'x' >"$work/nginx/www/index.html"
  local ups="" locs=""
  for v in "${sidecars[@]}"; do
    local name=${v%%:*} addr=${v#*:} u l bind=
    [[ $addr == unix:* ]] || bind=" proxy_bind 127.0.0.2;"
    u=$(sed -e "s|^upstream doorman {|upstream $name {|" -e "s|^\( *\)server 127.0.0.1:9180;|\1server $addr;|" "$repo/nginx/doorman-upstream.conf")
    l=$(sed -e "s|^location = /_doorman {|location = /_$name {|" -e "s|proxy_pass http://doorman/decide;|proxy_pass http://$name/decide;$bind|" "$repo/nginx/doorman-location.conf")
    grep -q "upstream $name {" <<<"$u" && grep -q "server $addr;" <<<"$u" || die "nginx/doorman-upstream.conf changed shape; update bench/run.sh"
    grep -q "location = /_$name {" <<<"$l" && grep -q "http://$name/decide;" <<<"$l" || die "nginx/doorman-location.conf changed shape; update bench/run.sh"
    ups+=$u$'\n'; locs+=$l$'\n'
    locs+="location /$name/ { auth_request /_$name; alias $work/nginx/www/; }"$'\n'
  done
  # doorman's /forward-auth through the same snippet: X-Forwarded-For in
  # place of X-Real-IP.
  for name in dm_tcp dm_unix; do
    local l bind=
    [ "$name" = dm_unix ] || bind=" proxy_bind 127.0.0.2;"
    l=$(sed -e "s|^location = /_doorman {|location = /_${name}_fa {|" -e "s|proxy_pass http://doorman/decide;|proxy_pass http://$name/forward-auth;$bind|" \
          -e "s|proxy_set_header X-Real-IP \$remote_addr;|proxy_set_header X-Forwarded-For \$remote_addr;|" "$repo/nginx/doorman-location.conf")
    grep -q "http://$name/forward-auth;" <<<"$l" && grep -q 'X-Forwarded-For \$remote_addr;' <<<"$l" || die "nginx/doorman-location.conf changed shape; update bench/run.sh"
    locs+=$l$'\n'"location /${name}_fa/ { auth_request /_${name}_fa; alias $work/nginx/www/; }"$'\n'
  done
  # The pairs' upstreams: the shipped snippet with both servers; a
  # location for /decide and one for /forward-auth on each.
  local -A pair_of=()
  for v in "${pairs[@]}"; do
    local name a pa apia b pb apib u l bind=
    read -r name a pa apia b pb apib <<<"$v"
    pair_of[$name]="$pa $apia $pb $apib"
    [[ $b == unix:* ]] || bind=" proxy_bind 127.0.0.2;"
    u=$(sed -e "s|^upstream doorman {|upstream $name {|" -e "s|^\( *\)server 127.0.0.1:9180;|\1server $a;\n\1server $b;|" "$repo/nginx/doorman-upstream.conf")
    grep -q "server $a;" <<<"$u" && grep -q "server $b;" <<<"$u" || die "nginx/doorman-upstream.conf changed shape; update bench/run.sh"
    l=$(sed -e "s|^location = /_doorman {|location = /_$name {|" -e "s|proxy_pass http://doorman/decide;|proxy_pass http://$name/decide;$bind|" "$repo/nginx/doorman-location.conf")
    ups+=$u$'\n'; locs+=$l$'\n'"location /$name/ { auth_request /_$name; alias $work/nginx/www/; }"$'\n'
    l=$(sed -e "s|^location = /_doorman {|location = /_${name}_fa {|" -e "s|proxy_pass http://doorman/decide;|proxy_pass http://$name/forward-auth;$bind|" \
          -e "s|proxy_set_header X-Real-IP \$remote_addr;|proxy_set_header X-Forwarded-For \$remote_addr;|" "$repo/nginx/doorman-location.conf")
    locs+=$l$'\n'"location /${name}_fa/ { auth_request /_${name}_fa; alias $work/nginx/www/; }"$'\n'
  done
  # BENCH_CACHE=1: doorman's allow decisions cached in nginx for 1 s per
  # client address (the trade-off in docs/benchmarks.md). The shipped location
  # with its "no cache" lines replaced.
  local cachecfg=""
  if [ "${BENCH_CACHE:-0}" = 1 ]; then
    mkdir -p "$work/nginx/cache"
    cachecfg="proxy_cache_path $work/nginx/cache keys_zone=doorman_decisions:1m levels=1 inactive=10s;"
    l=$(sed -e "s|^location = /_doorman {|location = /_dm_cache {|" -e "s|proxy_pass http://doorman/decide;|proxy_pass http://dm_unix/decide;|" \
          -e "s|^\( *\)proxy_cache off;|\1proxy_cache doorman_decisions; proxy_cache_key \$remote_addr; proxy_cache_valid 204 1s;|" \
          -e "s|^\( *\)proxy_buffering off;|\1proxy_buffering on;|" "$repo/nginx/doorman-location.conf")
    grep -q "proxy_cache doorman_decisions;" <<<"$l" || die "nginx/doorman-location.conf changed shape; update bench/run.sh"
    locs+=$l$'\n'"location /dm_cache/ { auth_request /_dm_cache; alias $work/nginx/www/; }"$'\n'
  fi
  # Variant 7: the cached mode's shipped snippets, as they are but for the
  # upstream's address and the cache directory.
  local cu cc
  cu=$(sed -e "s|^\( *\)server 127.0.0.1:9180;|\1server unix:$work/decide-cached.sock;|" "$repo/nginx/doorman-upstream.conf")
  cc=$(sed -e "s|/var/cache/nginx/doorman|$work/nginx/cache-doorman|" "$repo/nginx/doorman-cache.conf")
  grep -q "server unix:$work/decide-cached.sock;" <<<"$cu" && grep -q "$work/nginx/cache-doorman " <<<"$cc" \
    || die "nginx/doorman-upstream.conf or doorman-cache.conf changed shape; update bench/run.sh"
  ups+=$cu$'\n'$cc$'\n'
  locs+="include $repo/nginx/doorman-location-cached.conf;"$'\n'"location /cached/ { auth_request /_doorman; alias $work/nginx/www/; }"$'\n'
  local root=$work/nginx/www
  cat >"$work/nginx/nginx.conf" <<EOF
user root;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
    default_type text/html;
    access_log off;
    client_body_temp_path $work/nginx/tmp/body;
    proxy_temp_path $work/nginx/tmp/proxy;
    fastcgi_temp_path $work/nginx/tmp/fastcgi;
    uwsgi_temp_path $work/nginx/tmp/uwsgi;
    scgi_temp_path $work/nginx/tmp/scgi;
$ups
    $cachecfg
    server {
        listen 127.0.0.1:$port;
        location /native/ { allow 127.0.0.1; deny all; alias $root/; }
        location /ar204/ { auth_request /_ar204; alias $root/; }
        location = /_ar204 { internal; return 204; }
$locs
    }
}
EOF
  nginx -t -q -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf"
  nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
  pids+=($!); local nginx_master=$!
  wait_http "http://127.0.0.1:$port/native/index.html"
  # The worker, and with BENCH_CACHE the cache manager and loader too.
  local nginx_children
  read -r -a nginx_children <<<"$(pgrep -P "$nginx_master" | tr '\n' ' ')"
  [ ${#nginx_children[@]} -gt 0 ] || die "no nginx worker"

  # variant: label path sidecar_pid expected_status
  local variants=(
    "1-nginx-allow-deny native - 200"
    "2-auth_request-return-204 ar204 - 200"
    "3-fasthttp-204-tcp floor_tcp $pid_floor_tcp 200"
    "3-fasthttp-204-unix floor_unix $pid_floor_unix 200"
    "3l-fasthttp-lean-204-tcp floorlean_tcp $pid_floorlean_tcp 200"
    "3l-fasthttp-lean-204-unix floorlean_unix $pid_floorlean_unix 200"
    "4-doorman-allow-tcp dm_tcp $pid_dm_tcp 200"
    "4-doorman-allow-unix dm_unix $pid_dm_unix 200"
    "4f-doorman-forward-auth-allow-tcp dm_tcp_fa $pid_dm_tcp 200"
    "4f-doorman-forward-auth-allow-unix dm_unix_fa $pid_dm_unix 200"
    "4p-paired-allow-tcp pair_tcp pair -"
    "4p-paired-allow-unix pair_unix pair -"
    "4fp-paired-forward-auth-allow-tcp pair_tcp_fa pair -"
    "4fp-paired-forward-auth-allow-unix pair_unix_fa pair -"
    "5-doorman-deny-tcp dm_tcp $pid_dm_tcp 403"
    "5p-paired-deny-tcp pair_tcp pair -"
    "5p-paired-deny-unix pair_unix pair -"
    "5-doorman-deny-unix dm_unix $pid_dm_unix 403"
  )
  if [ "${BENCH_CACHE:-0}" = 1 ]; then
    variants+=("6-doorman-allow-cached-unix dm_cache $pid_dm_unix 200")
  fi
  variants+=("7-doorman-cached-mode-unix cached $pid_dm_cached 200")
  if [ -n "${BENCH_DOORMAN_B:-}" ]; then
    variants+=("4b-doorman-B-allow-tcp dm_b_tcp $pid_dm_b_tcp 200" "4b-doorman-B-allow-unix dm_b_unix $pid_dm_b_unix 200"
      "4abp-paired-A-B-allow-tcp pair_ab_tcp pair -" "4abp-paired-A-B-allow-unix pair_ab_unix pair -")
  fi
  local raw=$out/http-raw.tsv pairraw=$out/http-paired.tsv
  printf 'variant\tround\trequests\tnon2xx\trequests_a\trequests_b\tcpu_ns_a\tcpu_ns_b\n' >"$pairraw"
  printf 'variant\tround\trequests\tnon2xx\trps\tp50_us\tp99_us\tnginx_ticks\tsidecar_ticks\n' >"$raw"
  local hz; hz=$(getconf CLK_TCK)
  # ban_source POST 201 | DELETE 204: ban 127.0.0.1 in every doorman, or lift it.
  ban_source() {
    local a url
    for a in "${apis[@]}"; do
      url=http://127.0.0.1:$a/v1/bans
      if [ "$1" = POST ]; then
        [ "$(status_of -X POST -d '{"ip":"127.0.0.1","duration":"1h"}' "$url")" = "$2" ] || die "ban 127.0.0.1 failed"
      else
        [ "$(status_of -X DELETE "$url/127.0.0.1")" = "$2" ] || die "unban 127.0.0.1 failed"
      fi
    done
  }
  for r in $(seq "$rounds"); do
    for v in "${variants[@]}"; do
      read -r label path spid want <<<"$v"
      # The deny variants (5-…-tcp, the 5p pairs, 5-…-unix) run with the
      # bench source banned: the first bans it, the last lifts the ban
      # after its run, or at once when BENCH_VARIANTS leaves it out.
      [[ $label == 5-* && $label == *-tcp ]] && ban_source POST 201
      if [ -n "${BENCH_VARIANTS:-}" ] && ! grep -Eq -- "${BENCH_VARIANTS}" <<<"$label"; then
        [[ $label == 5-* && $label == *-unix ]] && ban_source DELETE 204
        continue
      fi
      if [ "$spid" = pair ]; then
        run_pair "$label" "$r" "$path" "${pair_of[${path%_fa}]}" >>"$pairraw"
        tail -1 "$pairraw" | cut -f1-6 >&2
        continue
      fi
      local url="http://127.0.0.1:$port/$path/index.html" got
      got=$(status_of "$url")
      [ "$got" = "$want" ] || die "$label: $url answered $got, want $want"
      local n0 s0=0 n1 s1=0
      n0=$(cpu_ticks "$nginx_master" "${nginx_children[@]}")
      [ "$spid" = - ] || s0=$(cpu_ticks "$spid")
      wrk -t"${BENCH_WRK_THREADS:-2}" -c16 -d"${secs}s" --latency "$url" >"$work/wrk.out" 2>&1 || die "wrk failed: $(cat "$work/wrk.out")"
      n1=$(cpu_ticks "$nginx_master" "${nginx_children[@]}")
      [ "$spid" = - ] || s1=$(cpu_ticks "$spid")
      awk -v label="$label" -v round="$r" -v nt=$((n1 - n0)) -v st=$((s1 - s0)) '
        function us(s) { if (s ~ /us$/) return s+0; if (s ~ /ms$/) return s*1000; if (s ~ /s$/) return s*1000000; return s }
        / 50% / { p50 = us($2) } / 99% / { p99 = us($2) }
        / requests in / { req = $1 }
        /Non-2xx or 3xx responses:/ { non = $5 }
        /^Requests\/sec:/ { rps = $2 }
        END { printf "%s\t%d\t%d\t%d\t%.0f\t%.0f\t%.0f\t%d\t%d\n", label, round, req, non, rps, p50, p99, nt, st }
      ' "$work/wrk.out" >>"$raw"
      [[ $label == 5-* && $label == *-unix ]] && ban_source DELETE 204
      tail -1 "$raw" | cut -f1-7 >&2
    done
  done

  if [ "${BENCH_PERF:-0}" = 1 ]; then
    command -v perf >/dev/null || die "BENCH_PERF=1 needs perf (Debian: linux-perf)"
    [ "$secs" -ge 3 ] || die "BENCH_PERF=1 needs BENCH_SECONDS of 3 or more (perf records all but the first and last half second)"
    local pv
    for pv in "4p-paired-allow-tcp pair_tcp" "4p-paired-allow-unix pair_unix" \
      ${BENCH_DOORMAN_B:+"4abp-paired-A-B-allow-tcp pair_ab_tcp" "4abp-paired-A-B-allow-unix pair_ab_unix"}; do
      read -r label path <<<"$pv"
      perf_pair "$label" "$path" "${pair_of[$path]}" >>"$work/perf.md"
    done
  fi

  # Sum requests and CPU over rounds; medians of rate and latency.
  awk -F'\t' -v hz="$hz" '
    NR == 1 { next }
    !($1 in seen) { seen[$1] = 1; order[++n] = $1 }
    { req[$1] += $3; non[$1] += $4; nt[$1] += $8; st[$1] += $9; k = ++cnt[$1]
      rps[$1, k] = $5; p50[$1, k] = $6; p99[$1, k] = $7 }
    function med(a, v,   i, j, m, t, x) { m = cnt[v]; for (i = 1; i <= m; i++) x[i] = a[v, i]
      for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
      return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2 }
    function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "" }
    END {
      for (i = 1; i <= n; i++) { v = order[i]
        ng[v] = nt[v] / hz * 1e6 / req[v]; sc[v] = st[v] / hz * 1e6 / req[v]; tot[v] = ng[v] + sc[v] }
      floor2 = tot["2-auth_request-return-204"]; floor1 = tot["1-nginx-allow-deny"]
      print "| variant | req/s | p50 µs | p99 µs | requests | non-2xx | CPU µs/req nginx | CPU µs/req sidecar | CPU µs/req total | total ÷ (1) | total ÷ (2) | sidecar ÷ fasthttp (3) | sidecar ÷ lean fasthttp (3l) |"
      print "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
      for (i = 1; i <= n; i++) { v = order[i]; tr = v; sub(/^.*-/, "", tr)
        f3 = sc["3-fasthttp-204-" tr]; r3 = (v ~ /^[456]/ && f3 > 0) ? sprintf("%.2f", sc[v] / f3) : ""
        f3l = sc["3l-fasthttp-lean-204-" tr]; r3l = (v ~ /^[456]/ && f3l > 0) ? sprintf("%.2f", sc[v] / f3l) : ""
        printf "| %s | %.0f | %.0f | %.0f | %d | %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n", v, med(rps, v), med(p50, v), med(p99, v), req[v], non[v], ng[v], sc[v], tot[v], ratio(tot[v], floor1), ratio(tot[v], floor2), r3, r3l
        printf "%s\t%.2f\t%.2f\n", v, ng[v], sc[v] > "/dev/stderr" }
    }' "$raw" >"$out/http.md" 2>"$out/cpu.dat"
  {
    echo "### nginx + wrk ($rounds round(s) × ${secs} s per variant, ${BENCH_WRK_THREADS:-2} wrk thread(s), 16 connections, one nginx worker, $nbans bans)"
    echo
    cat "$out/http.md"
    echo
  } >>"$results"

  pair_summary "$pairraw" "$out/cpu.dat" >>"$results"
  [ ! -s "$work/perf.md" ] || cat "$work/perf.md" >>"$results"

  # What the refresh adds to a banning webhook call (variant 7's doorman).
  local res
  res=$("$work/cachelat" -api "127.0.0.1:$cached_api" -url "http://127.0.0.1:$port/cached/index.html" -net 127.30 -n "$acktrials")
  log "cachelat: $res"
  {
    echo "### cached mode: the banning webhook call, address kept by nginx (refreshed) or not"
    echo
    echo "| trials each | late | kept p50 µs | kept p99 µs | not kept p50 µs | not kept p99 µs |"
    echo "|---:|---:|---:|---:|---:|---:|"
    awk '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "| %s | %s | %s | %s | %s | %s |\n", v["trials"], v["late"], v["kept_p50_us"], v["kept_p99_us"], v["not_kept_p50_us"], v["not_kept_p99_us"] }' <<<"$res"
    echo
  } >>"$results"

  [ -s "$out/cpu.dat" ] && gnuplot <<EOF
set terminal pngcairo size 1000,520 font "DejaVu Sans,10" noenhanced
set output "$chart"
set title "CPU per protected request (nginx + sidecar), one run, $rounds × ${secs} s per variant"
set ylabel "CPU µs per request"
set style data histograms
set style histogram rowstacked
set style fill solid 0.85 border -1
set boxwidth 0.7
set key top left
set grid ytics
set xtics rotate by -25 scale 0 font ",9"
set datafile separator "\t"
set yrange [0:*]
plot "$out/cpu.dat" using 2:xtic(1) title "nginx" lc rgb "#4a7ab0", \
     "" using 3 title "sidecar" lc rgb "#d9822b"
EOF
  [ -s "$out/cpu.dat" ] && log "chart: $chart"
  for p in "$nginx_master" "$pid_floor_tcp" "$pid_floor_unix" "$pid_floorlean_tcp" "$pid_floorlean_unix" "$pid_dm_tcp" "$pid_dm_unix" ${pid_dm_b_tcp:-} ${pid_dm_b_unix:-}; do kill "$p" 2>/dev/null || true; done
}

# ---------------------------------------------------------------- ingest
run_ingest() {
  {
    echo "### webhook ingest (POST /v1/failures, a new address each time, 64 connections, ${ingest_d} per case)"
    echo
    echo "| case | failures/s | failures sent | errors |"
    echo "|---|---:|---:|---:|"
  } >>"$results"
  local i=0
  for c in "5 off 64" "5 on 64" "1 off 64" "1 on 64" "1 on 256"; do
    read -r maxf persist conns <<<"$c"
    i=$((i + 1))
    local dec api state=() name=ing$i
    dec=$(freeport); api=$(freeport)
    [ "$persist" = on ] && state=(DOORMAN_STATE_FILE="$work/$name.db")
    start_doorman "$name" "127.0.0.1:$dec" "$api" DOORMAN_MAX_FAILURES="$maxf" "${state[@]}"
    local res
    res=$("$work/load" ingest -api "127.0.0.1:$api" -n 100000000 -c "$conns" -d "$ingest_d" -seed "$i")
    log "ingest max_failures=$maxf persistence=$persist conns=$conns: $res"
    local rate n errs
    rate=$(sed -n 's/.*rate=\([0-9]*\).*/\1/p' <<<"$res"); n=$(sed -n 's/.* n=\([0-9]*\).*/\1/p' <<<"$res"); errs=$(sed -n 's/.*errors=\([0-9]*\).*/\1/p' <<<"$res")
    local what="no ban (DOORMAN_MAX_FAILURES=5)"
    [ "$maxf" = 1 ] && what="every failure bans (DOORMAN_MAX_FAILURES=1)"
    echo "| $what, persistence $persist, $conns connections | $rate | $n | $errs |" >>"$results"
    eval "kill \$pid_$name"
  done
  echo >>"$results"

  {
    echo "### ack → next decision (banning failure acknowledged, then at once GET /decide for that address)"
    echo
    echo "| persistence | trials | first decision 403 | late | ack→403 p50 µs | ack→403 p99 µs | banning webhook call p50 µs | p99 µs |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  } >>"$results"
  for persist in off on; do
    local dec api state=() name=ack$persist
    dec=$(freeport); api=$(freeport)
    [ "$persist" = on ] && state=(DOORMAN_STATE_FILE="$work/$name.db")
    start_doorman "$name" "127.0.0.1:$dec" "$api" "${state[@]}"
    local res
    res=$("$work/load" acklat -api "127.0.0.1:$api" -decide "127.0.0.1:$dec" -n "$acktrials" -failures 5 -seed 9)
    log "acklat persistence=$persist: $res"
    awk -v p="$persist" '{ for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", p, v["trials"], v["denied_first"], v["late"], v["ack_to_403_p50_us"], v["ack_to_403_p99_us"], v["webhook_p50_us"], v["webhook_p99_us"] }' <<<"$res" >>"$results"
    eval "kill \$pid_$name"
  done
  echo >>"$results"
}

# ---------------------------------------------------------------- memory
# settle PID: wait until RSS stops growing (5 s at most), then print it.
settle() {
  local a b
  b=$(rss_kb "$1")
  for _ in $(seq 10); do sleep 0.5; a=$b; b=$(rss_kb "$1"); [ "$b" -le "$a" ] && break; done
  echo "$b"
}
# mem_case NAME LOAD-MODE N SEED METRIC LABEL UNIT: a fresh doorman, N entries
# sent by bench/load in LOAD-MODE, and one table row of the RSS they cost.
mem_case() {
  local name=$1 mode=$2 n=$3 seed=$4 metric=$5 label=$6 unit=$7
  local dec api before after heap held pidvar=pid_$name
  dec=$(freeport); api=$(freeport)
  start_doorman "$name" "127.0.0.1:$dec" "$api" DOORMAN_LOG_LEVEL=warn
  local pid=${!pidvar}
  before=$(settle "$pid")
  "$work/load" "$mode" -api "127.0.0.1:$api" -n "$n" -c 32 -seed "$seed" >&2
  after=$(settle "$pid")
  heap=$(curl -s "http://127.0.0.1:$api/metrics" | awk '/^go_memstats_heap_inuse_bytes/ {printf "%.1f", $2/1048576}')
  held=$(curl -s "http://127.0.0.1:$api/metrics" | awk -v m="$metric" '$1 == m {print $2}')
  echo "| $label | $before | $after | $heap | $held $unit | $(( (after - before) * 1024 / held )) |" >>"$results"
  kill "$pid"
}
run_memory() {
  {
    echo "### memory (memory-only state, default caps: DOORMAN_MAX_BANS=1000000, DOORMAN_MAX_TRACKED=1000000)"
    echo
    echo "| case | RSS before kB | RSS after kB | Go heap in use after MB | held | RSS bytes per entry |"
    echo "|---|---:|---:|---:|---:|---:|"
  } >>"$results"
  mem_case mem_bans bans "$mem_bans" 3 doorman_bans_active "$mem_bans manual bans (POST /v1/bans)" bans
  mem_case mem_fail ingest "$mem_fail" 4 doorman_failures_tracked "$mem_fail distinct failing addresses (POST /v1/failures)" tracked
  echo >>"$results"
}

for part in $parts; do
  case $part in
    http) run_http ;;
    ingest) run_ingest ;;
    memory) run_memory ;;
    *) die "unknown part $part (http, ingest, memory)" ;;
  esac
done
cat "$results"
log "results in $out"
