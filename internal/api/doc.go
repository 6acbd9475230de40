// Package api is what doorman's JSON API, its status page and its CLI share:
// how values are shown to a person (Visible).
//
// It imports no HTTP, disk or Redis package, so the CLI can use it without
// the server's dependencies.
package api
