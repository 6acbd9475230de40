package engine

import (
	"net/netip"
	"slices"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Restore loads the state file's records into core at start: those still
// worth keeping at now (ended less than the max ban time ago), oldest ban
// first, so that a table smaller than the file keeps the newest. Records the
// table evicts or refuses are deleted from the file. It returns how many
// records were read.
func Restore(core *decide.Core, st *store.Store, now time.Time) (int, error) {
	recs, err := st.Load(now, core.Policy().MaxBanTime)
	if err != nil {
		return 0, err
	}
	slices.SortFunc(recs, func(a, b decide.Ban) int { return a.Until.Compare(b.Until) })
	var drop []netip.Prefix
	for _, b := range recs {
		ev, err := core.Apply(b, now)
		if err != nil {
			drop = append(drop, b.Key)
		}
		for _, e := range ev {
			drop = append(drop, e.Key)
		}
	}
	return len(recs), st.Sync(drop, core.Record)
}
