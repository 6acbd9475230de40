package cluster

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/store"
)

// GateShare is the gate's part of cluster mode (gate.Shared): one key and
// one set of records for every doorman, and a channel that tells them of
// each change. Keys (fields are hex):
//
//	PREFIX gatekey           the shared gate key (hex), set once (SET NX)
//	PREFIX gate:credentials  hash: credential id → credential (the gate's JSON)
//	PREFIX gate:users        hash: username → session epoch and user handle
//	PREFIX gate:enrollments  hash: SHA-256 of a link's token → its record
//	PREFIX gate:step:…       a TOTP step used, SET NX with a TTL
//	PREFIX gate              channel: "changed"; every doorman reloads the hashes
//
// It has a client of its own, so the gate's traffic never waits behind the
// ban sync.
type GateShare struct {
	rdb    redis.UniversalClient
	prefix string
	log    *slog.Logger
	// Resync is how often Watch reloads even without a message, in case
	// one was lost; 0 means 30 s.
	Resync time.Duration
}

// NewGateShare connects lazily to url (DOORMAN_REDIS_URL) under prefix.
func NewGateShare(url, prefix string, log *slog.Logger) (*GateShare, error) {
	rdb, err := NewClient(url)
	if err != nil {
		return nil, err
	}
	if prefix == "" {
		prefix = "doorman:"
	}
	return &GateShare{rdb: rdb, prefix: prefix, log: log}, nil
}

// Close closes the client.
func (s *GateShare) Close() error { return s.rdb.Close() }

var gateHashes = [...]string{store.GateCredentials: "gate:credentials", store.GateUsers: "gate:users", store.GateEnrollments: "gate:enrollments"}

func (s *GateShare) hash(b store.GateBucket) (string, error) {
	if int(b) >= len(gateHashes) {
		return "", fmt.Errorf("gate bucket %d unknown", b)
	}
	return s.prefix + gateHashes[b], nil
}

func (s *GateShare) channel() string { return s.prefix + "gate" }

// Key implements gate.Shared.
func (s *GateShare) Key(ctx context.Context, offer []byte) ([]byte, error) {
	k := s.prefix + "gatekey"
	if err := s.rdb.SetNX(ctx, k, hex.EncodeToString(offer), 0).Err(); err != nil {
		return nil, fmt.Errorf("gate key: %w", err)
	}
	v, err := s.rdb.Get(ctx, k).Result()
	if err != nil {
		return nil, fmt.Errorf("gate key: %w", err)
	}
	key, err := hex.DecodeString(v)
	if err != nil || len(key) < decide.GateKeyMin {
		return nil, errors.New("gate key in Redis is malformed")
	}
	return key, nil
}

// Write implements gate.Shared: one MULTI, then the message.
func (s *GateShare) Write(ctx context.Context, ops []store.GateOp) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for _, op := range ops {
			h, err := s.hash(op.Bucket)
			if err != nil {
				return err
			}
			if op.Value == nil {
				p.HDel(ctx, h, hex.EncodeToString(op.Key))
			} else {
				p.HSet(ctx, h, hex.EncodeToString(op.Key), op.Value)
			}
		}
		p.Publish(ctx, s.channel(), "changed")
		return nil
	})
	return err
}

// Records implements gate.Shared.
func (s *GateShare) Records(ctx context.Context, b store.GateBucket, fn func(k, v []byte)) error {
	h, err := s.hash(b)
	if err != nil {
		return err
	}
	all, err := s.rdb.HGetAll(ctx, h).Result()
	if err != nil {
		return err
	}
	for f, v := range all {
		k, err := hex.DecodeString(f)
		if err != nil {
			return fmt.Errorf("%s: field %q is not hex", h, f)
		}
		fn(k, []byte(v))
	}
	return nil
}

// Take implements gate.Shared: HDEL answers 1 to one caller only.
func (s *GateShare) Take(ctx context.Context, b store.GateBucket, key []byte) (bool, error) {
	h, err := s.hash(b)
	if err != nil {
		return false, err
	}
	n, err := s.rdb.HDel(ctx, h, hex.EncodeToString(key)).Result()
	if err != nil || n == 0 {
		return false, err
	}
	return true, s.rdb.Publish(ctx, s.channel(), "changed").Err()
}

// Once implements gate.Shared.
func (s *GateShare) Once(ctx context.Context, name string, ttl time.Duration) (bool, error) {
	return s.rdb.SetNX(ctx, s.prefix+name, "1", ttl).Result()
}

// Watch implements gate.Shared: it subscribes, calls changed once
// subscribed (to catch what was missed) and at every message and every
// Resync; after a lost connection it subscribes again.
func (s *GateShare) Watch(ctx context.Context, changed func()) {
	every := s.Resync
	if every <= 0 {
		every = 30 * time.Second
	}
	for ctx.Err() == nil {
		sub := s.rdb.Subscribe(ctx, s.channel())
		if _, err := sub.Receive(ctx); err != nil {
			sub.Close()
			if ctx.Err() == nil {
				s.log.Warn("gate: subscribing to the cluster channel failed; retrying", "err", err)
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
			}
			continue
		}
		changed()
		s.listen(ctx, sub, every, changed)
		sub.Close()
	}
}

func (s *GateShare) listen(ctx context.Context, sub *redis.PubSub, every time.Duration, changed func()) {
	msgs := sub.Channel(redis.WithChannelHealthCheckInterval(5 * time.Second))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-msgs:
			if !ok {
				return
			}
			changed()
		case <-tick.C:
			changed()
		}
	}
}
