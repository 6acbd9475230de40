package engine

import (
	"context"
	"sync"
)

// ProxiesReport collects, for one API call, whether the caches of the proxies
// in front of doorman (nginx's cached mode) were refreshed for the changes
// the call made. The API shows it as "proxies_refreshed". Safe for
// concurrent use.
type ProxiesReport struct {
	mu            sync.Mutex
	asked, failed bool
}

type proxiesKey struct{}

// WithProxiesReport returns ctx carrying a new, empty report.
func WithProxiesReport(ctx context.Context) context.Context {
	return context.WithValue(ctx, proxiesKey{}, &ProxiesReport{})
}

// ReportProxies records in ctx's report, if it carries one, that proxy
// caches were refreshed (ok) or that a refresh failed.
func ReportProxies(ctx context.Context, ok bool) {
	r, _ := ctx.Value(proxiesKey{}).(*ProxiesReport)
	if r == nil {
		return
	}
	r.mu.Lock()
	r.asked, r.failed = true, r.failed || !ok
	r.mu.Unlock()
}

// ProxiesRefreshed returns whether every refresh recorded in ctx's report
// succeeded, or nil when none was made (plain mode, or nothing to refresh).
func ProxiesRefreshed(ctx context.Context) *bool {
	r, _ := ctx.Value(proxiesKey{}).(*ProxiesReport)
	if r == nil {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.asked {
		return nil
	}
	ok := !r.failed
	return &ok
}
