#!/usr/bin/env bash
# Brings the docker-compose stack up on a fresh Debian machine: installs
# docker.io, docker-compose and debootstrap when missing, starts dockerd when
# none answers, builds the base images locally (test/compose/images.sh > .env)
# when the registry cannot be reached, then runs `docker-compose up --build`
# with the arguments given (e.g. -d, or --profile cluster). Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."

need=()
for pair in dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /tmp/doorman-dockerd.log)"
  (dockerd >/tmp/doorman-dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/doorman-dockerd.log"; exit 1; }
fi

if [ ! -f .env ] && ! timeout 60 docker pull -q nginx:stable >/dev/null 2>&1; then
  echo "the registry is unreachable: building base images locally into .env"
  test/compose/images.sh > .env
fi

exec docker-compose up --build "$@"
