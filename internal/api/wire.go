package api

import (
	"time"

	"github.com/doorman/doorman/decide"
)

// The wire types: the JSON the API reads and answers, as the CLI decodes it.
// Times are RFC 3339 strings; an omitted field is empty.

// AddrIn is the body of POST /v1/failures, /v1/successes and /v1/attempts.
type AddrIn struct {
	IP       string `json:"ip"`
	Username string `json:"username"`
	Device   string `json:"device"` // the client's device token, if any
}

// BanIn is the body of POST /v1/bans (ParseBan checks it).
type BanIn struct {
	IP       string `json:"ip"`
	Duration string `json:"duration,omitempty"`
	Reason   string `json:"reason,omitempty"` // the note kept with the ban
}

// FailureJSON is the answer of POST /v1/failures.
type FailureJSON struct {
	IP       string       `json:"ip"`
	Key      string       `json:"key"`
	Failures int          `json:"failures"`
	Banned   bool         `json:"banned"`
	Until    string       `json:"until,omitempty"`
	NeverBan bool         `json:"never_ban,omitempty"`
	Account  *AccountJSON `json:"account,omitempty"`
}

// SuccessJSON is the answer of POST /v1/successes: the unit's failures are
// back to 0; with a username (accounts on), a new device token.
type SuccessJSON struct {
	IP            string `json:"ip"`
	Key           string `json:"key"`
	Failures      int    `json:"failures"`
	Device        string `json:"device,omitempty"`
	DeviceExpires string `json:"device_expires,omitempty"`
}

// AttemptJSON is the answer of POST /v1/attempts.
type AttemptJSON struct {
	Allow      bool   `json:"allow"`
	Reason     string `json:"reason,omitempty"`
	RetryAfter int64  `json:"retry_after,omitempty"` // seconds, when the refusal has an end
}

// BanJSON is a ban as the API shows it.
type BanJSON struct {
	Key    string `json:"key"`
	Until  string `json:"until"`
	Reason string `json:"reason"`
	Count  int    `json:"count"`
	Note   string `json:"note,omitempty"`
}

// BanOf is b as the API shows it.
func BanOf(b decide.Ban) BanJSON {
	return BanJSON{Key: b.Key.String(), Until: b.Until.Format(time.RFC3339), Reason: b.Reason(), Count: b.Count, Note: b.Note}
}

// BansJSON is the answer of GET /v1/bans.
type BansJSON struct {
	Bans []BanJSON `json:"bans"`
}

// UnbanJSON is the body of a 200 to DELETE /v1/bans/…: the bans are lifted
// but an nginx cache was not refreshed (cached mode), or the other doormen
// learn it when Redis is reachable again (cluster mode); a 204 has none.
type UnbanJSON struct {
	ProxiesRefreshed *bool `json:"proxies_refreshed,omitempty"`
	Shared           *bool `json:"shared,omitempty"`
}

// UnlockJSON is the body of a 200 to DELETE /v1/accounts/…: unlocked here,
// not yet on the other doormen (Redis unreachable); a 204 has none.
type UnlockJSON struct {
	Shared *bool `json:"shared,omitempty"`
}

// DecideJSON is the answer of GET /v1/decide: a decision explained.
type DecideJSON struct {
	IP       string `json:"ip"`
	Verdict  string `json:"verdict"`
	Reason   string `json:"reason"`
	Key      string `json:"key,omitempty"`
	Until    string `json:"until,omitempty"`
	Failures int    `json:"failures"`
	// Feed names the feed that denied (reason feed).
	Feed    string `json:"feed,omitempty"`
	Country string `json:"country,omitempty"` // from DOORMAN_GEOIP_DB
	ASN     string `json:"asn,omitempty"`     // "AS64500", from DOORMAN_ASN_DB
	Org     string `json:"org,omitempty"`
	Network string `json:"network,omitempty"` // the announced network holding the address
}

// AccountJSON is an account as the API shows it.
type AccountJSON struct {
	Username string `json:"username"`
	Failures int    `json:"failures"`
	Locked   bool   `json:"locked"`
	Until    string `json:"until,omitempty"`
	Count    int    `json:"count,omitempty"`
}

// AccountsJSON is the answer of GET /v1/accounts: the locks in force.
type AccountsJSON struct {
	Accounts []AccountJSON `json:"accounts"`
}

// DefaultEventsLimit is how many events GET /v1/events answers without
// ?limit; MaxEventsLimit the most it answers.
const (
	DefaultEventsLimit = 100
	MaxEventsLimit     = 1_000_000
)

// EventJSON is one entry of the event history as the API shows it.
type EventJSON struct {
	Time   string `json:"time"`
	Type   string `json:"type"` // ban, unban, range_ban, range_unban, lock, unlock
	Key    string `json:"key"`
	Reason string `json:"reason,omitempty"`
	Source string `json:"source,omitempty"` // failures, manual or cluster
	Until  string `json:"until,omitempty"`
	Count  int    `json:"count,omitempty"`
}

// EventsJSON is the answer of GET /v1/events, newest first.
type EventsJSON struct {
	Events []EventJSON `json:"events"`
}

// ErrorJSON is the body of every 4xx and 5xx.
type ErrorJSON struct {
	Error string `json:"error"`
}
