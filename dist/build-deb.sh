#!/bin/sh
# Builds doorman's Debian package with dpkg-deb:
#   dist/build-deb.sh [VERSION [OUTDIR]]
# VERSION defaults to `git describe` (a leading v dropped; 0.0.0+… when it
# does not start with a digit), OUTDIR to dist/out. Prints the .deb's path.
# GOARCH picks the architecture (default: the build machine's). Needs Go and
# dpkg-deb; no root (the files are owned by root in the package).
#
# Contents:
#   /usr/bin/doorman
#   /usr/lib/systemd/system/doorman.service     (dist/doorman.service)
#   /etc/default/doorman                        (dist/doorman.default)
#   /etc/nginx/doorman/                         (nginx/: snippets, pages, site.conf.example)
#   /etc/fail2ban/filter.d/doorman.conf, jail.d/doorman.conf (the jail off)
#   /usr/share/doc/doorman/kernel-bans.conf     (the CAP_NET_ADMIN drop-in)
# The postinst creates the system user doorman and, where systemd runs,
# enables and starts the service.
set -eu
cd "$(dirname "$0")/.."

version=${1:-$(git describe --tags --always --dirty 2>/dev/null || echo 0.0.0)}
version=${version#v}
case $version in [0-9]*) ;; *) version=0.0.0+$version ;; esac
out=${2:-dist/out}
arch=$(go env GOARCH)

root=$(mktemp -d)
chmod 755 "$root" # the package's ./ becomes the target's /
trap 'rm -rf "$root"' EXIT

CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$root/usr/bin/doorman" .
install -D -m 644 dist/doorman.service "$root/usr/lib/systemd/system/doorman.service"
install -D -m 644 dist/doorman.default "$root/etc/default/doorman"
install -D -m 644 dist/kernel-bans.conf "$root/usr/share/doc/doorman/kernel-bans.conf"
mkdir -p "$root/etc/nginx/doorman"
for f in nginx/*; do
  [ -f "$f" ] && install -m 644 "$f" "$root/etc/nginx/doorman/"
done
install -D -m 644 nginx/fail2ban/filter.d/doorman.conf "$root/etc/fail2ban/filter.d/doorman.conf"
# Off until the administrator turns it on: with kernel bans on, doorman does
# the jail's work itself.
mkdir -p "$root/etc/fail2ban/jail.d"
sed 's/^enabled *= *true/enabled  = false/' nginx/fail2ban/jail.d/doorman.conf >"$root/etc/fail2ban/jail.d/doorman.conf"
chmod 644 "$root/etc/fail2ban/jail.d/doorman.conf"

mkdir -p "$root/DEBIAN"
(cd "$root" && find etc -type f | sed 's|^|/|' | sort) >"$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: doorman
Version: $version
Architecture: $arch
Maintainer: doorman <doorman@localhost>
Installed-Size: $size
Depends: adduser
Recommends: nginx
Suggests: nftables, fail2ban
Section: net
Priority: optional
Homepage: https://github.com/doorman/doorman
Description: bans and allow/deny lists for nginx auth_request
 doorman answers nginx auth_request subrequests with 204 or 403 from CIDR
 lists and a table of bans, and takes failed-login reports from the app
 through a JSON webhook. Optionally it keeps its bans in an nftables table
 of its own, so the kernel drops banned addresses before nginx.
CONTROL
cat >"$root/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  if ! getent passwd doorman >/dev/null; then
    adduser --system --group --home /var/lib/doorman --no-create-home --quiet doorman
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable doorman.service >/dev/null 2>&1 || true
    systemctl restart doorman.service || true
  fi
fi
POSTINST
cat >"$root/DEBIAN/prerm" <<'PRERM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
  systemctl stop doorman.service || true
  systemctl disable doorman.service >/dev/null 2>&1 || true
fi
PRERM
cat >"$root/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
  rm -rf /var/lib/doorman /var/log/doorman
fi
POSTRM
chmod 755 "$root/DEBIAN/postinst" "$root/DEBIAN/prerm" "$root/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/doorman_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
