package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
)

// handle applies an account message from a peer; false: not an account op.
func (a *Accounts) handle(m message) bool {
	now := a.c.now()
	switch m.Op {
	case opLock:
		l := decide.Lock{Username: m.Key, Until: time.UnixMilli(m.Until).UTC(), Count: m.Count, Failures: m.Failures}
		a.learn(l, now)
	case opUnlock:
		if l, ok := a.mem().Unlock(m.Key, now); ok {
			a.c.local.Learn(engine.Change{Unlock: &l}, now)
		}
	case opDLock:
		if id, ok := deviceID(m.Key); ok {
			a.mem().ApplyDevice(id, time.UnixMilli(m.Until).UTC(), now)
		}
	case opDReset:
		// Only the doorman that saw the success holds the token's state in
		// memory long; the others forget it when its lock ends.
	default:
		return false
	}
	return true
}

// learn applies a lock made elsewhere, unless this doorman holds it already.
func (a *Accounts) learn(l decide.Lock, now time.Time) {
	if cur, locked, _ := a.mem().Status(l.Username, now); locked && !cur.Until.Before(l.Until) {
		return
	}
	evicted := a.mem().Apply(l, now)
	ch := engine.Change{Lock: &l}
	for _, e := range evicted {
		ch.Users = append(ch.Users, e.Username)
	}
	a.c.local.Learn(ch, now) // an error is logged and counted
}

func deviceID(s string) (decide.DeviceID, bool) {
	var id decide.DeviceID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, false
	}
	copy(id[:], b)
	return id, true
}

// reconcile agrees on the device key (the first doorman to reach Redis sets
// it, the others adopt it), replays the unlocks queued during an outage,
// loads every lock Redis holds and pushes those held here that Redis lacks.
func (a *Accounts) reconcile(ctx context.Context, now time.Time) error {
	if !a.Enabled() {
		return nil
	}
	if err := a.shareKey(ctx); err != nil {
		return err
	}
	if err := a.replayUnlocks(ctx, now); err != nil {
		return err
	}
	p := globEscape(a.c.keys.prefix)
	err := a.c.scanHashes(ctx, p+"alock:{*", func(_ string, h banHash) {
		until, _ := strconv.ParseInt(h.get("until"), 10, 64)
		count, _ := strconv.Atoi(h.get("count"))
		failures, _ := strconv.Atoi(h.get("failures"))
		if name := h.get("name"); name != "" && until > now.UnixMilli() && a.c.admit(message{Op: opLock, Key: name, Until: until}, now) {
			a.learn(decide.Lock{Username: name, Until: time.UnixMilli(until).UTC(), Count: count, Failures: failures}, now)
		}
	})
	if err != nil {
		return fmt.Errorf("loading account locks: %w", err)
	}
	err = a.c.scanHashes(ctx, p+"dlock:{*", func(_ string, h banHash) {
		until, _ := strconv.ParseInt(h.get("until"), 10, 64)
		if id, ok := deviceID(h.get("name")); ok && until > now.UnixMilli() && a.c.admit(message{Op: opDLock, Key: h.get("name"), Until: until}, now) {
			a.mem().ApplyDevice(id, time.UnixMilli(until).UTC(), now)
		}
	})
	if err != nil {
		return fmt.Errorf("loading device locks: %w", err)
	}
	return a.pushLocks(ctx, now)
}

// pushLocks offers every lock in force here to Redis (made while Redis was
// unreachable, or lost by a Redis restart); the longer lock wins there, and
// a lock unlocked meanwhile (tombstone) is dropped here.
func (a *Accounts) pushLocks(ctx context.Context, now time.Time) error {
	c := a.c
	maxLock := ms(a.mem().Policy().MaxLockTime)
	for _, l := range a.mem().Locks(now) {
		n, err := pushLockScript.Run(ctx, c.rdb, a.akeys("a", l.Username), now.UnixMilli(), l.Until.UnixMilli(),
			max(l.Count, 1), l.Failures, maxLock, c.keys.channel(), l.Username, c.id).Int64()
		if err != nil {
			return fmt.Errorf("pushing account locks: %w", err)
		}
		switch n {
		case 1:
			c.pushed.Inc()
		case -1: // unlocked elsewhere while this doorman could not hear it
			if l, ok := a.mem().Unlock(l.Username, now); ok {
				a.c.local.Learn(engine.Change{Unlock: &l}, now)
			}
		}
	}
	return nil
}

// shareKey makes every doorman sign tokens with one key: Redis keeps the
// first one offered; a doorman whose key differs adopts it, unless its key
// comes from DOORMAN_DEVICE_KEY (then the operator gave them all one, or
// must: a warning says so).
func (a *Accounts) shareKey(ctx context.Context) error {
	raw, fromConfig := a.acc.Key()
	if raw == nil {
		return nil
	}
	k := a.c.keys.prefix + "devicekey"
	if err := a.c.rdb.SetNX(ctx, k, hex.EncodeToString(raw), 0).Err(); err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	v, err := a.c.rdb.Get(ctx, k).Result()
	if err != nil {
		return fmt.Errorf("device key: %w", err)
	}
	shared, err := hex.DecodeString(v)
	if err != nil || len(shared) < decide.DeviceKeyMin {
		return errors.New("device key in Redis is malformed")
	}
	if fromConfig {
		if hex.EncodeToString(raw) != v {
			a.c.log.Warn("DOORMAN_DEVICE_KEY differs from the key other doormen use: tokens they issue are not honoured here")
		}
		return nil
	}
	return a.acc.UseKey(shared)
}
