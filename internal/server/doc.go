// Package server is doorman's HTTP layer: the decision listener that the
// proxies call, and the JSON API (webhook, bans, accounts, health, metrics).
//
// The decision listener answers, always with an empty body, per path:
// /decide (nginx auth_request) 204 or 403 with X-Doorman-*; /forward-auth
// (Traefik, Caddy) and /ext-authz/… (Envoy) 200 or 403 without them. Each
// path reads exactly one client-address source (decide.go, forward.go). A
// request it cannot read is a 403 (fail closed).
//
// The API answers JSON: 200/201/204 on success, 400 for bad input, 401 without
// the token, 404, 405 for a wrong method, 413 for a body over 4 KiB. It never
// panics on input and never answers 5xx for a client's mistake.
//
// Handlers are safe for concurrent use; they hold no state of their own.
package server
