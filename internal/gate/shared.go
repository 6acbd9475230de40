package gate

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// Shared is cluster mode's part (cluster.GateShare): where every doorman's
// gate keeps one key and one set of records. A change is written there
// first, then to the state file; every doorman reloads the whole set when
// told of a change, so a passkey registered through one doorman signs in
// through another, and a revocation reaches every doorman within a round
// trip of the channel.
type Shared interface {
	// Key stores offer as the shared key unless one is kept, and returns it.
	Key(ctx context.Context, offer []byte) ([]byte, error)
	// Write applies ops and tells the other doormen.
	Write(ctx context.Context, ops []store.GateOp) error
	// Records calls fn with every record of bucket b.
	Records(ctx context.Context, b store.GateBucket, fn func(k, v []byte)) error
	// Take deletes key from bucket b; true only for the one caller that did.
	Take(ctx context.Context, b store.GateBucket, key []byte) (bool, error)
	// Once reports true the first time name is asked for within ttl.
	Once(ctx context.Context, name string, ttl time.Duration) (bool, error)
	// Watch calls changed after each (re)connection and each change, until
	// ctx ends.
	Watch(ctx context.Context, changed func())
}

const sharedTimeout = 5 * time.Second

// Run keeps the gate in step with the shared records until ctx ends; it
// returns at once without a Shared.
func (g *Gate) Run(ctx context.Context) {
	if g.o.Shared == nil {
		return
	}
	g.o.Shared.Watch(ctx, func() {
		c, cancel := context.WithTimeout(ctx, sharedTimeout)
		defer cancel()
		if err := g.sync(c); err != nil && ctx.Err() == nil {
			g.o.Log.Warn("gate: syncing with the cluster failed; keeping what this doorman holds", "err", err)
		}
	})
}

// sync agrees on the key and reloads every shared record, keeping them in
// the state file. A cluster holding no credential yet is given this
// doorman's.
func (g *Gate) sync(ctx context.Context) error {
	sh := g.o.Shared
	if len(g.o.Key) == 0 {
		if err := g.shareKey(ctx); err != nil {
			return err
		}
	}
	var sets [store.NumGateBuckets]map[string][]byte
	for b := range sets {
		sets[b] = map[string][]byte{}
		if err := sh.Records(ctx, store.GateBucket(b), func(k, v []byte) { sets[b][string(k)] = v }); err != nil {
			return err
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.joined {
		// The first doorman ever to join shares what it holds; every
		// other one, and this one from then on, takes the cluster's
		// records, so a credential revoked while a doorman was away is
		// not brought back by it.
		first, err := sh.Once(ctx, "gate:init", 0)
		if err != nil {
			return err
		}
		g.joined = true
		if first && len(g.creds) > 0 {
			return g.shareAll(ctx)
		}
	}
	creds, users, enrolls := map[decide.GateCredID]*Credential{}, map[string]*user{}, map[[32]byte]enrollRecord{}
	for k, v := range sets[store.GateCredentials] {
		c := new(Credential)
		if json.Unmarshal(v, c) != nil || k != string(c.ID[:]) {
			return fmt.Errorf("shared gate credential %x does not decode", k)
		}
		creds[c.ID] = c
	}
	for k, v := range sets[store.GateUsers] {
		u := new(user)
		if json.Unmarshal(v, u) != nil {
			return fmt.Errorf("shared gate user %q does not decode", k)
		}
		users[k] = u
	}
	for k, v := range sets[store.GateEnrollments] {
		var e enrollRecord
		if json.Unmarshal(v, &e) != nil || len(k) != 32 {
			return fmt.Errorf("shared gate enrollment %x does not decode", k)
		}
		enrolls[[32]byte([]byte(k))] = e
	}
	// Memory first: Redis is the authority, and a revocation must hold
	// here before the state file's copy catches up.
	g.creds, g.users, g.enrolls = creds, users, enrolls
	g.publish()
	if st := g.o.Store; st != nil {
		if err := st.GateReplace(sets); err != nil {
			return fmt.Errorf("state file %s: %w", st.Path(), err)
		}
	}
	return nil
}

// shareAll writes every record this doorman holds to the cluster. Called
// with g.mu held.
func (g *Gate) shareAll(ctx context.Context) error {
	var ops []store.GateOp
	for _, c := range g.creds {
		ops = append(ops, credOp(c))
	}
	for n, u := range g.users {
		ops = append(ops, userOp(n, u))
	}
	for h, e := range g.enrolls {
		v, _ := json.Marshal(e)
		ops = append(ops, store.GateOp{Bucket: store.GateEnrollments, Key: h[:], Value: v})
	}
	g.o.Log.Info("gate: first doorman in the cluster; sharing its records", "credentials", len(g.creds))
	return g.o.Shared.Write(ctx, ops)
}

// shareKey makes every doorman sign sessions with one key: the first one
// offered to Redis.
func (g *Gate) shareKey(ctx context.Context) error {
	mine, err := g.currentKey()
	if err != nil {
		return err
	}
	k, err := g.o.Shared.Key(ctx, mine)
	if err != nil {
		return err
	}
	if bytes.Equal(k, mine) {
		return nil
	}
	if g.o.Store != nil {
		if err := g.o.Store.SetGateKey(k); err != nil {
			return fmt.Errorf("state file %s: keeping the cluster's gate key: %w", g.o.Store.Path(), err)
		}
	}
	if err := g.sessions.SetKey(k); err != nil {
		return fmt.Errorf("the cluster's gate key: %w", err)
	}
	g.keyMu.Lock()
	g.key = k
	g.keyMu.Unlock()
	g.o.Log.Warn("gate key replaced by the cluster's; sessions this doorman issued before are no longer valid")
	return nil
}

func (g *Gate) currentKey() ([]byte, error) {
	g.keyMu.Lock()
	defer g.keyMu.Unlock()
	return g.key, nil
}

// usedStep reports whether the TOTP step of credential id was taken here
// first, cluster-wide; always true without a Shared (the state file's step
// decides alone).
func (g *Gate) usedStep(ctx context.Context, id decide.GateCredID, step int64) (bool, error) {
	if g.o.Shared == nil {
		return true, nil
	}
	return g.o.Shared.Once(ctx, "gate:step:"+hex.EncodeToString(id[:])+":"+strconv.FormatInt(step, 10), 4*totpPeriod*time.Second)
}
