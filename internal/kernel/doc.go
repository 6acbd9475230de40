// Package kernel keeps doorman's bans in an nftables table of its own, so that
// the kernel drops new connections from banned addresses before nginx sees
// them (DOORMAN_NFT_TABLE; docs/kernel.md).
//
// The table is one inet table, written only by doorman through netlink in
// batched transactions (never the nft command): two ban sets (bans4,
// ipv4_addr; bans6, ipv6_addr; flags interval,timeout), two never-ban sets,
// an optional ports set, and a chain on each hook (input; forward for
// containers) that accepts never-ban sources first and then drops new TCP and
// UDP connections from banned sources to the ports. No other table is read or
// written.
//
// The Table is an engine hook (Committed): each change's keys are written as
// memory holds them (Options.Record) before the call answers, and reported
// as "kernel" in its receipt; changes learned from the cluster and the
// periodic Check run in Run.
//
// Invariants: each element's kernel timeout ends when its ban ends, so the
// kernel forgets a ban by itself. An interval set holds no overlapping
// elements, so a ban that outlasts the ban around it is cut out of it (see
// partition); otherwise a ban is one element. Netlink exchanges are bounded
// by Options.Timeout. A Table is safe for concurrent use; its writers take
// turns under one mutex, and nothing on doorman's decision path calls it.
package kernel
