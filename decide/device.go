package decide

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"sync"
	"time"
)

// A device token tells doorman that a browser has logged in as an account
// before, so that it is not locked out with the attackers when the account is
// locked. Layout, 49 bytes, then unpadded base64url (66 characters):
//
//	version (1) = 1 | expires (8, unix seconds, big-endian) | nonce (8) | MAC (32)
//
// MAC is HMAC-SHA256 under the device key of "doorman-device\x00", the first
// 17 bytes and the normalised username: the token names no account, and a
// token for one account is forged for any other. Tokens are verified, never
// stored; what doorman keeps about one (its failures) is keyed by its
// DeviceID, a SHA-256 of its bytes.
const (
	deviceVersion  = 1
	deviceRaw      = 1 + 8 + 8 + sha256.Size
	DeviceTokenLen = (deviceRaw*8 + 5) / 6 // 66
	// DeviceKeyMin is the shortest device key accepted, in bytes.
	DeviceKeyMin = 32
)

var deviceContext = []byte("doorman-device\x00")

// Strict decoding: a token whose unused last bits are set would otherwise
// decode to the same bytes as the genuine one, a second spelling that a
// string-keyed count would treat as another device.
var deviceEncoding = base64.RawURLEncoding.Strict()

// DeviceID identifies a token in doorman's state without holding it.
type DeviceID [16]byte

// Device token errors, from Verify.
var (
	ErrDeviceMalformed = errors.New("device token malformed")
	ErrDeviceInvalid   = errors.New("device token not valid for this account") // forged, another account's, or another key's
	ErrDeviceExpired   = errors.New("device token expired")
)

// DeviceKey issues and verifies device tokens. It is safe for concurrent use.
type DeviceKey struct {
	macs sync.Pool // of hash.Hash: HMAC-SHA256 under the key
}

// NewDeviceKey returns a DeviceKey for key, which must be at least
// DeviceKeyMin bytes.
func NewDeviceKey(key []byte) (*DeviceKey, error) {
	if len(key) < DeviceKeyMin {
		return nil, fmt.Errorf("device key is %d bytes, want at least %d", len(key), DeviceKeyMin)
	}
	k := append([]byte(nil), key...)
	return &DeviceKey{macs: sync.Pool{New: func() any { return hmac.New(sha256.New, k) }}}, nil
}

func (k *DeviceKey) mac(dst, head []byte, user string) []byte {
	h := k.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(deviceContext)
	h.Write(head)
	h.Write([]byte(user))
	dst = h.Sum(dst)
	k.macs.Put(h)
	return dst
}

// Issue returns a token for user (normalised) that expires at expires
// (rounded down to the second). nonce makes tokens issued in the same
// second to the same account distinct; the caller draws it at random.
func (k *DeviceKey) Issue(user string, expires time.Time, nonce [8]byte) string {
	var raw [deviceRaw]byte
	raw[0] = deviceVersion
	binary.BigEndian.PutUint64(raw[1:9], uint64(expires.Unix()))
	copy(raw[9:17], nonce[:])
	k.mac(raw[17:17], raw[:17], user)
	return deviceEncoding.EncodeToString(raw[:])
}

// Verify checks that token was issued by this key for user (normalised) and
// has not expired at now, and returns its DeviceID. A token for another
// account fails exactly as a forged one does.
func (k *DeviceKey) Verify(token, user string, now time.Time) (DeviceID, error) {
	var raw [deviceRaw]byte
	if len(token) != DeviceTokenLen {
		return DeviceID{}, ErrDeviceMalformed
	}
	if n, err := deviceEncoding.Decode(raw[:], []byte(token)); err != nil || n != deviceRaw || raw[0] != deviceVersion {
		return DeviceID{}, ErrDeviceMalformed
	}
	var want [sha256.Size]byte
	if !hmac.Equal(k.mac(want[:0], raw[:17], user), raw[17:]) {
		return DeviceID{}, ErrDeviceInvalid
	}
	if int64(binary.BigEndian.Uint64(raw[1:9])) <= now.Unix() {
		return DeviceID{}, ErrDeviceExpired
	}
	return deviceID(raw[:]), nil
}

func deviceID(raw []byte) DeviceID {
	sum := sha256.Sum256(raw)
	var id DeviceID
	copy(id[:], sum[:])
	return id
}
