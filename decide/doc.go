// Package decide is doorman's decision core: CIDR allow/deny lists, a bounded
// table of bans, a bounded failure tracker, and the Core that combines them into
// a verdict for one client address at one instant.
//
// Invariants:
//   - Nothing here does I/O, reads a clock or logs; every time-dependent method
//     takes now. The HTTP layer, the store and the cluster sync live elsewhere.
//   - Addresses are unmapped at the boundary: Core methods unmap IPv4-mapped IPv6
//     and drop zones themselves, so ::ffff:1.2.3.4 and 1.2.3.4 are one client.
//   - Core is safe for concurrent use. Decide takes no lock but a read lock on
//     the ban table, does not allocate and cannot fail. Writers (failures, bans,
//     unbans) serialize on one mutex.
//   - Lists is immutable once built; reloads build a new one and swap it in.
//   - State is bounded: at most MaxBans ban records and MaxTracked failure
//     trackers; see BanTable and Tracker for the eviction rules.
package decide
