#!/usr/bin/env bash
# fail2ban's nftables action loading N bans (fail2ban-client set JAIL banip),
# in a network namespace of its own, for docs/benchmarks.md's comparison
# with doorman's kernel bans. Needs root, fail2ban, nftables, iproute2.
#
# usage: bench/fail2ban-nft.sh [N]      (default 20000)
set -euo pipefail
n=${1:-20000}
ns=f2b-bench-$$
work=$(mktemp -d /tmp/f2b-bench.XXXXXX)
cleanup() {
  ip netns exec "$ns" fail2ban-client -s "$work/sock" stop >/dev/null 2>&1 || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/conf/filter.d"
cp -r /etc/fail2ban/action.d /etc/fail2ban/fail2ban.conf /etc/fail2ban/paths-*.conf "$work/conf/"
sed -i 's#^dbfile.*#dbfile = :memory:#' "$work/conf/fail2ban.conf"
printf '[Definition]\nfailregex = ^never <HOST>$\n' >"$work/conf/filter.d/none.conf"
cat >"$work/conf/jail.conf" <<JAIL
[INCLUDES]
before = paths-debian.conf
[doorman]
enabled = true
filter = none
logpath = $work/empty.log
backend = polling
action = nftables-multiport[name=doorman, port="80,443", protocol=tcp]
bantime = 3600
JAIL
: >"$work/empty.log"
ip netns add "$ns"
ip netns exec "$ns" fail2ban-server -f -x -c "$work/conf" -s "$work/sock" -p "$work/pid" --logtarget "$work/f2b.log" >/dev/null 2>&1 &
for _ in $(seq 50); do ip netns exec "$ns" fail2ban-client -s "$work/sock" ping >/dev/null 2>&1 && break; sleep 0.1; done
python3 -c "print('\n'.join('10.%d.%d.%d' % (i >> 16 & 255, i >> 8 & 255, i & 255) for i in range($n)))" >"$work/ips"
start=$(date +%s.%N)
xargs -n 1000 ip netns exec "$ns" fail2ban-client -s "$work/sock" set doorman banip <"$work/ips" >/dev/null
got=0
for _ in $(seq 1800); do
  got=$(ip netns exec "$ns" nft list set inet f2b-table addr-set-doorman 2>/dev/null | grep -o '10\.[0-9.]*' | wc -l)
  [ "$got" -ge "$n" ] && break
  sleep 1
done
echo "fail2ban nftables-multiport: $got of $n bans in the kernel after $(python3 -c "import time; print(round(time.time() - $start, 1))") s"
