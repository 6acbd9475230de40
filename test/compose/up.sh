#!/usr/bin/env bash
# Brings the docker-compose stack up on a fresh Debian machine: installs
# docker.io, docker-compose and debootstrap when missing, starts dockerd when
# none answers, builds the base images locally (test/compose/images.sh > .env)
# when the registry cannot be reached, then runs `docker-compose up --build`
# with the arguments given (e.g. -d, or --profile cluster).
#
# Run it as root (a container or a CI runner is root already); it never calls
# sudo itself. Not root: sudo test/compose/up.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

# asroot WHAT: stop with a clear message when a step needs root and we are not.
asroot() {
  [ "$(id -u)" = 0 ] && return
  echo "test/compose/up.sh: $1 needs root; run it as root, or as: sudo test/compose/up.sh" >&2
  exit 1
}

need=()
for pair in dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  asroot "installing ${need[*]}"
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  asroot "starting dockerd"
  echo "starting dockerd (log: /tmp/doorman-dockerd.log)"
  (dockerd >/tmp/doorman-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/doorman-dockerd.log"; exit 1; }
fi

if [ ! -f .env ] && ! timeout 60 docker pull -q nginx:stable >/dev/null 2>&1; then
  asroot "building the base images (debootstrap)"
  echo "the registry is unreachable: building base images locally into .env"
  test/compose/images.sh > .env
fi

exec docker-compose up --build "$@"
