package server

import (
	"errors"

	"github.com/VictoriaMetrics/metrics"

	"github.com/doorman/doorman/internal/gate"
)

// GateMetrics are the gate's series on /metrics, registered when the gate is
// on (every label value from the start, at 0):
//
//	doorman_gate_signins_total{method="passkey"|"totp",result="ok"|"wrong"|"locked"|"invalid"|"error"}
//	doorman_gate_refused_total{why="address"|"cross_site"}   gate page requests refused before any sign-in
//	doorman_gate_sessions_checked_total{result="valid"|"invalid"}   sessions presented on /gate and /forward-auth/gate
//
// A wrong sign-in is also a failure of the address and the account
// (doorman_failures_total, doorman_account_failures_total). Counting
// allocates nothing, on the decision path as on the pages.
type GateMetrics struct {
	signIns         map[string]map[string]*metrics.Counter // method → result
	refusedAddress  *metrics.Counter
	refusedCross    *metrics.Counter
	sessionsValid   *metrics.Counter
	sessionsInvalid *metrics.Counter
}

// Sign-in methods and results, as the labels name them.
const (
	methodPasskey = "passkey"
	methodTOTP    = "totp"
)

var signInResults = []string{"ok", "wrong", "locked", "invalid", "error"}

// NewGateMetrics registers the gate's series in s.
func NewGateMetrics(s *metrics.Set) *GateMetrics {
	m := &GateMetrics{signIns: map[string]map[string]*metrics.Counter{},
		refusedAddress:  s.NewCounter(`doorman_gate_refused_total{why="address"}`),
		refusedCross:    s.NewCounter(`doorman_gate_refused_total{why="cross_site"}`),
		sessionsValid:   s.NewCounter(`doorman_gate_sessions_checked_total{result="valid"}`),
		sessionsInvalid: s.NewCounter(`doorman_gate_sessions_checked_total{result="invalid"}`),
	}
	for _, method := range []string{methodPasskey, methodTOTP} {
		m.signIns[method] = map[string]*metrics.Counter{}
		for _, r := range signInResults {
			m.signIns[method][r] = s.NewCounter(`doorman_gate_signins_total{method="` + method + `",result="` + r + `"}`)
		}
	}
	return m
}

// signIn counts a sign-in's outcome by the gate's error.
func (m *GateMetrics) signIn(method string, err error) {
	if m == nil {
		return
	}
	r := "error"
	switch {
	case err == nil:
		r = "ok"
	case errors.Is(err, gate.ErrLocked):
		r = "locked"
	case errors.Is(err, gate.ErrWrong):
		r = "wrong"
	case errors.Is(err, gate.ErrCeremony), errors.Is(err, gate.ErrOff):
		r = "invalid"
	}
	m.signIns[method][r].Inc()
}

func (m *GateMetrics) refused(address bool) {
	switch {
	case m == nil:
	case address:
		m.refusedAddress.Inc()
	default:
		m.refusedCross.Inc()
	}
}

// session counts a session presented on the decision path.
func (m *GateMetrics) session(valid bool) {
	switch {
	case m == nil:
	case valid:
		m.sessionsValid.Inc()
	default:
		m.sessionsInvalid.Inc()
	}
}
