// Package lists keeps the decision lists current: the static allow, deny
// and never-ban lists of the configuration, the deny feeds
// (DOORMAN_DENY_FEEDS), and the networks of the countries and autonomous
// systems the configuration names, read from .mmdb databases.
//
// Everything is parsed once, when it is loaded, into one decide.Lists that
// the Manager swaps into the core whole: a decision never reads a feed or a
// database. A feed or a database that cannot be read, or that looks wrong
// (see Parse and the shrink rule in feed.go), keeps the copy in use; the
// last good copy of each feed is kept on disk so a restart without network
// still denies. Manager methods are safe for concurrent use; rebuilds are
// serialized.
package lists
