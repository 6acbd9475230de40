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
//   - Cluster is an engine.Backend: it decides in Redis, changes this
//     doorman's memory (engine.Memory) and returns each change for the
//     engine to commit; it books nothing itself. Peers' changes enter the
//     engine through engine.Local.Learn. layers_test.go lists the engine
//     names it may use.
//   - Redis unreachable: the backend falls back to engine.Memory (local
//     counting, local bans and locks, each answer saying "shared": false);
//     those bans and locks are offered to Redis when it is back, and unbans
//     and unlocks made meanwhile are replayed first. The longer of two bans
//     (or locks) wins; a tombstone keeps a lifted ban or lock from being
//     pushed back by an instance that missed the unban.
//   - Cluster is safe for concurrent use; Run must be called once.
package cluster
