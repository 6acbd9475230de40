// Package engine is doorman's ban service: the decision core (package decide)
// plus what a ban means outside memory — the state file, the log lines, the
// metrics, the change events and the hooks. The HTTP listeners use Local
// (and Accounts, its account side). Where counts and bans are decided is a
// Backend: Memory (one doorman) or a shared store (cluster mode).
//
// One write path: the backend makes each change in memory and describes it
// as a Change; Local.commit (Local.Learn for a change learned from another
// doorman) is the only code that books it: metrics, log lines, the state
// file, events, hooks. TestCommitIsTheOnlyWriter holds it so.
//
// Invariants:
//   - Every Local method that makes or lifts a ban returns only once the
//     change is in force for Decide and, with a state file, on disk. A change
//     in force but not written returns an error wrapping ErrNotSaved.
//   - The state file is written from memory: each write stores the key's
//     record as the Core holds it at commit time (store.Write), so concurrent
//     changes of one key can never leave a stale record or a stale delete.
//   - Addresses are cleaned by the Core; callers pass them as parsed.
//   - Local, Accounts and Metrics are safe for concurrent use. Event
//     observers and hooks are registered before serving and run in the
//     goroutine that made the change.
package engine
