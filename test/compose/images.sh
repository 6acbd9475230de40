#!/usr/bin/env bash
# Builds the base images the compose stack needs, locally and without any
# registry: minimal Debian bookworm root filesystems made with debootstrap and
# loaded with `docker import`. An image that already exists is reused.
#
# Prints the image variables docker-compose reads, one NAME=image per line, so
#   test/compose/images.sh > .env
# makes `docker-compose up --build` use them. Progress goes to stderr.
#
# Needs root, debootstrap, a running docker engine and /usr/local/go (copied
# into the Go builder image). Mirror: DOORMAN_DEBIAN_MIRROR
# (default http://deb.debian.org/debian).
set -euo pipefail

mirror=${DOORMAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
goroot=${DOORMAN_GOROOT:-/usr/local/go}
gover=$("$goroot/bin/go" env GOVERSION)
gover=${gover#go}

nginx_image=doorman-local/nginx:$suite
go_image=doorman-local/golang:$gover-$suite
app_image=doorman-local/django:$suite
redis_image=doorman-local/redis:$suite

log() { echo "images.sh: $*" >&2; }

have() { docker image inspect "$1" >/dev/null 2>&1; }

# rootfs DIR PACKAGES: a minbase bookworm tree with the given packages, the
# apt lists and caches dropped.
rootfs() {
  local dir=$1 pkgs=$2
  log "debootstrap $suite with $pkgs"
  debootstrap --variant=minbase --include="$pkgs" "$suite" "$dir" "$mirror" >"$dir.log" 2>&1 ||
    { tail -20 "$dir.log" >&2; return 1; }
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
}

# import DIR IMAGE CHANGES...: loads the tree as an image.
import() {
  local dir=$1 image=$2; shift 2
  local changes=()
  for c in "$@"; do changes+=(-c "$c"); done
  tar --numeric-owner -C "$dir" -c . | docker import "${changes[@]}" - "$image" >/dev/null
  log "imported $image"
}

work=$(mktemp -d /tmp/doorman-images.XXXXXX)
trap 'rm -rf "$work"' EXIT

build_nginx() {
  rootfs "$work/nginx" nginx-light
  # The stack mounts its own server block into conf.d; Debian's default site
  # would otherwise take port 80 as default_server.
  rm -f "$work"/nginx/etc/nginx/sites-enabled/default
  ln -sf /dev/stdout "$work"/nginx/var/log/nginx/access.log
  ln -sf /dev/stderr "$work"/nginx/var/log/nginx/error.log
  import "$work/nginx" "$nginx_image" \
    'EXPOSE 80' 'CMD ["nginx", "-g", "daemon off;"]'
}

build_go() {
  rootfs "$work/go" ca-certificates,git
  cp -a "$goroot" "$work/go/usr/local/go"
  # Trust the host's local CAs too, so `go mod download` works where TLS to
  # the module proxy goes through an intercepting proxy.
  if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$work/go/usr/local/share/ca-certificates/"
    chroot "$work/go" update-ca-certificates >/dev/null
  fi
  import "$work/go" "$go_image" \
    'ENV PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    'ENV GOTOOLCHAIN=local' 'CMD ["go", "version"]'
}

build_app() {
  rootfs "$work/app" python3-django
  import "$work/app" "$app_image" 'ENV PYTHONUNBUFFERED=1' 'CMD ["python3"]'
}

build_redis() {
  rootfs "$work/redis" redis-server
  import "$work/redis" "$redis_image" 'EXPOSE 6379' \
    'CMD ["redis-server", "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no"]'
}

# Missing images are built in parallel: debootstrap mostly waits on the mirror.
pids=()
have "$nginx_image" || { build_nginx & pids+=($!); }
have "$go_image"    || { build_go & pids+=($!); }
have "$app_image"   || { build_app & pids+=($!); }
have "$redis_image" || { build_redis & pids+=($!); }
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ "$fail" = 0 ] || { log "building base images failed"; exit 1; }

echo "GO_IMAGE=$go_image"
echo "DOORMAN_NGINX_IMAGE=$nginx_image"
echo "DOORMAN_APP_IMAGE=$app_image"
echo "DOORMAN_REDIS_IMAGE=$redis_image"
