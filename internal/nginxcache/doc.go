// Package nginxcache keeps nginx's cache of doorman's verdicts exact (the
// cached mode of docs/nginx.md): nginx keeps each verdict per client address
// for as long as doorman's X-Accel-Expires allows, doorman remembers what it
// let nginx keep, and on every change that alters a verdict it asks each
// nginx to replace the verdicts it may hold inside the changed prefix.
//
// The parts, one file each:
//   - key.go: Key, an address written exactly as nginx writes $remote_addr,
//     its cache key. A verdict is kept only under a key doorman can write
//     back byte for byte.
//   - set.go: Set, the bounded memory of kept verdicts, answering which of
//     them fall inside a prefix.
//   - expires.go: how long nginx may keep a verdict.
//   - refresh.go: the Refresher, which sends the refresh requests to nginx.
//   - hook.go: the Refresher as an engine hook: each change is refreshed
//     before its call answers, and the receipt says so (proxies_refreshed);
//     changes learned from the cluster are queued for Run.
//
// Key, Set and ExpiryOf are pure: no I/O, no clock (time is passed in), no
// logs; Set is safe for concurrent use and Remember does not allocate once
// its tables have grown. The Refresher does HTTP and is safe for concurrent
// use. Addresses are clean (IPv4-mapped unmapped, no zone) where a netip.Addr
// is passed; a Key keeps the ::ffff: spelling apart, since nginx keys it apart.
//
// The package lives apart from decide because it is about one proxy's cache
// and its spelling of addresses, not about the decision, and because the
// Refresher does I/O.
package nginxcache
