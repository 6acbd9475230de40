#!/usr/bin/env bash
# Runs every doorman test on a fresh Debian bookworm machine: installs the
# Debian packages the integration tests need (when missing, after apt-get
# update), starts dockerd and a redis-server on a free loopback port, then runs
# the Go tests, unit and integration, none skipped. Needs Go 1.26 on PATH or in
# /usr/local/go.
#
# Run it as root (a container or a CI runner is root already): apt-get and
# dockerd need it. It never calls sudo itself. Not root: sudo test/run.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in nginx:nginx redis-server:redis-server fail2ban-regex:fail2ban \
            dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap \
            wrk:wrk gnuplot:gnuplot-nox ip:iproute2 caddy:caddy haproxy:haproxy chromium:chromium curl:curl; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
/usr/bin/python3 -c 'import django' 2>/dev/null || need+=(python3-django)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  # Keep the packages' own services (nginx, caddy and haproxy on :80,
  # redis-server) from starting where an init system would start them: the
  # tests start their own, on free loopback ports.
  policy=/usr/sbin/policy-rc.d made=
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made=1
  fi
  apt-get update -qq
  rc=0
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null || rc=$?
  if [ -n "$made" ]; then rm -f "$policy"; fi
  if [ "$rc" != 0 ]; then echo "apt-get install failed ($rc)"; exit "$rc"; fi
fi
export PATH=/usr/local/go/bin:$PATH

# dockerd: the compose tests need an engine; start one when none answers.
if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd"
  (dockerd >/tmp/doorman-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/doorman-dockerd.log"; exit 1; }
fi

# redis-server: the cluster tests talk to a real one on loopback.
if [ -z "${DOORMAN_TEST_REDIS:-}" ]; then
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --pidfile /tmp/doorman-redis-$port.pid --logfile /tmp/doorman-redis-$port.log
  trap 'kill "$(cat /tmp/doorman-redis-'"$port"'.pid)" 2>/dev/null || true' EXIT
  export DOORMAN_TEST_REDIS="redis://127.0.0.1:$port/0"
  for _ in $(seq 1 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi

export DOORMAN_TEST_REQUIRE_ALL=1   # integration tests fail instead of skipping
# test/ (integration suites, the browser test) and bench/ are modules of
# their own: doorman's go.mod lists only what doorman runs on.
go vet ./...
(cd test && go vet ./...)
(cd bench && go vet ./...)
go test -count=1 -timeout 30m ./...
(cd test && go test -count=1 -timeout 30m ./...)
