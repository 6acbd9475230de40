// Package api is what doorman's JSON API (internal/server), its status page
// (internal/ui) and its CLI share, written once:
//
//   - the wire types, the JSON the API reads and answers (wire.go);
//   - the input rules (input.go): a ban's target, duration and note
//     (ParseBan), an unban's target and what it lifts (ParseUnban, Lift),
//     usernames (Username: decide.NormalizeUsername, which refuses control
//     and format characters);
//   - how a string is shown to a person (Visible): no control or format
//     character reaches a terminal or a page.
//
// It imports no HTTP, disk or Redis package and no other part of doorman
// but decide, so the CLI uses it without the server's dependencies. Every
// function is pure and safe for concurrent use.
package api
