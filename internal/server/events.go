package server

import (
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/engine"
)

// events answers GET /v1/events?limit=N: the last N entries, newest first.
func (a *API) events(ctx *fasthttp.RequestCtx) {
	limit := api.DefaultEventsLimit
	if s := ctx.QueryArgs().Peek("limit"); s != nil {
		n, err := strconv.Atoi(string(s))
		if err != nil || n < 1 || n > api.MaxEventsLimit {
			apiError(ctx, fasthttp.StatusBadRequest, `"limit": %q is not a number from 1 to %d`, truncate(string(s), 32), api.MaxEventsLimit)
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
	out := api.EventsJSON{Events: make([]api.EventJSON, len(entries))}
	for i, e := range entries {
		out.Events[i] = api.EventJSON{Time: e.Time.Format(time.RFC3339), Type: e.Type, Key: e.Key, Reason: e.Reason, Source: e.Source, Count: e.Count}
		if !e.Until.IsZero() {
			out.Events[i].Until = e.Until.Format(time.RFC3339)
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}
