// Package server is doorman's HTTP layer: the decision listener that nginx's
// auth_request calls, and the JSON API (webhook, bans, health, metrics).
//
// The decision listener answers only 204 (allow) or 403 (deny), always with an
// empty body: nginx turns any other status into a 500, and a body costs it the
// keep-alive connection. A request it cannot read is a 403 (fail closed).
//
// The API answers JSON: 200/201/204 on success, 400 for bad input, 401 without
// the token, 404, 405 for a wrong method, 413 for a body over 4 KiB. It never
// panics on input and never answers 5xx for a client's mistake.
//
// Handlers are safe for concurrent use; they hold no state of their own.
package server
