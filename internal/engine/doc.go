// Package engine is doorman's ban service: the decision core (package decide)
// plus what a ban means outside memory — the state file, the log lines, the
// metrics and the change events. The HTTP listeners use it through Service;
// cluster mode wraps a Local and shares its bookkeeping.
//
// Invariants:
//   - Every Service method that makes or lifts a ban returns only once the
//     change is in force for Decide and, with a state file, on disk. A change
//     in force but not written returns an error wrapping ErrNotSaved.
//   - The state file is written from memory: each write stores the key's
//     record as the Core holds it at commit time (store.Sync), so concurrent
//     changes of one key can never leave a stale record or a stale delete.
//   - Addresses are cleaned by the Core; callers pass them as parsed.
//   - Local and Metrics are safe for concurrent use. Event observers are
//     registered before serving and run in the goroutine that made the change.
package engine
