// Package cluster is doorman's cluster mode: several instances share failures
// and bans through Redis (or a Redis-compatible server such as Valkey), so a
// ban learned by one front end holds on all of them. See docs/cluster.md.
//
// Invariants:
//   - Redis is the source of truth for failure counts and bans while it is
//     reachable: failures are counted and the threshold applied by one Lua
//     script per failure (scripts.go), atomically across instances.
//   - The decision path never touches Redis. Every instance keeps the bans in
//     its own decide.Core, learns changes through pub/sub, and reloads the
//     full ban set on start and on every reconnect.
//   - A ban or unban made through this instance's API is in the local Core and
//     in the state file before the API answers, whether or not Redis has it.
//   - Redis unreachable: the service falls back to engine.Local (local counting,
//     local bans); those bans are offered to Redis when it is back, and unbans
//     made meanwhile are replayed. The longer of two bans wins; a tombstone
//     keeps a lifted ban from being pushed back by an instance that missed
//     the unban.
//   - Cluster is safe for concurrent use; Run must be called once.
package cluster
