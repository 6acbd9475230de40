package server

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/engine"
)

// DefaultEventsLimit is how many events GET /v1/events answers without ?limit.
const DefaultEventsLimit = 100

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

// events answers GET /v1/events?limit=N: the last N entries, newest first.
func (a *API) events(ctx *fasthttp.RequestCtx) {
	limit := DefaultEventsLimit
	if s := ctx.QueryArgs().Peek("limit"); s != nil {
		n, err := strconv.Atoi(string(s))
		if err != nil || n < 1 || n > 1_000_000 {
			apiError(ctx, fasthttp.StatusBadRequest, `"limit": %q is not a number from 1 to 1000000`, truncate(string(s), 32))
			return
		}
		limit = n
	}
	var entries []engine.HistoryEntry
	if a.Events != nil {
		var err error
		if entries, err = a.Events.Last(limit); err != nil {
			a.serviceError(ctx, err)
			return
		}
	}
	out := make([]EventJSON, len(entries))
	for i, e := range entries {
		out[i] = EventJSON{Time: e.Time.Format(time.RFC3339), Type: e.Type, Key: e.Key, Reason: e.Reason, Source: e.Source, Count: e.Count}
		if !e.Until.IsZero() {
			out[i].Until = e.Until.Format(time.RFC3339)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, map[string]any{"events": out})
}
