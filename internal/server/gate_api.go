package server

import (
	"errors"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/gate"
)

// The gate's API, with the bearer token like all of /v1/:
//
//	POST   /v1/gate/enrollments {"username"}  → 201 {"username","url","expires"}: a one-time link
//	GET    /v1/gate/credentials               → 200 {"credentials":[…]} (no secrets)
//	DELETE /v1/gate/credentials/{id}          → 200, 404: its sessions end at once
//	DELETE /v1/gate/sessions/{username}       → 200, 404: every session of the user ends
//
// With the gate off every path answers 404.
func (a *API) handleGate(ctx *fasthttp.RequestCtx, path string) {
	if a.Gate == nil {
		apiError(ctx, fasthttp.StatusNotFound, "the gate is off (DOORMAN_GATE_ORIGINS unset or DOORMAN_GATE_ADDR empty)")
		return
	}
	switch {
	case path == "/v1/gate/enrollments":
		if a.method(ctx, "POST") {
			a.gateEnroll(ctx)
		}
	case path == "/v1/gate/credentials":
		if a.method(ctx, "GET") {
			a.gateCredentials(ctx)
		}
	case strings.HasPrefix(path, "/v1/gate/credentials/"):
		if a.method(ctx, "DELETE") {
			a.gateRevoke(ctx, strings.TrimPrefix(path, "/v1/gate/credentials/"))
		}
	case strings.HasPrefix(path, "/v1/gate/sessions/"):
		if a.method(ctx, "DELETE") {
			a.gateSignOut(ctx, strings.TrimPrefix(path, "/v1/gate/sessions/"))
		}
	default:
		apiError(ctx, fasthttp.StatusNotFound, "no such endpoint: %s", path)
	}
}

// gateCredential is c as the API shows it.
func gateCredential(c gate.Info) api.GateCredentialJSON {
	out := api.GateCredentialJSON{ID: c.ID, Username: c.User, Kind: c.Kind, Created: c.Created.UTC().Format(time.RFC3339)}
	if !c.Used.IsZero() {
		out.Used = c.Used.UTC().Format(time.RFC3339)
	}
	return out
}

func (a *API) gateCredentials(ctx *fasthttp.RequestCtx) {
	creds := a.Gate.Credentials()
	out := api.GateCredentialsJSON{Credentials: make([]api.GateCredentialJSON, len(creds))}
	for i, c := range creds {
		out.Credentials[i] = gateCredential(c)
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

func (a *API) gateEnroll(ctx *fasthttp.RequestCtx) {
	var in api.EnrollmentIn
	if !readJSON(ctx, &in) {
		return
	}
	user, ok := accountName(ctx, in.Username)
	if !ok {
		return
	}
	if user == "" {
		apiError(ctx, fasthttp.StatusBadRequest, `"username" is required`)
		return
	}
	tok, exp, err := a.Gate.Enroll(user, a.Now())
	if err != nil {
		apiError(ctx, fasthttp.StatusServiceUnavailable, "enrollment: %v", err)
		return
	}
	writeJSON(ctx, fasthttp.StatusCreated, api.EnrollmentJSON{Username: user, URL: a.Gate.EnrollURL(tok), Expires: exp.Format(time.RFC3339)})
}

func (a *API) gateRevoke(ctx *fasthttp.RequestCtx, raw string) {
	id, err := gate.ParseID(raw)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return
	}
	info, err := a.Gate.Revoke(id)
	switch {
	case errors.Is(err, gate.ErrNotFound):
		apiError(ctx, fasthttp.StatusNotFound, "credential %q: %v", raw, err)
	case err != nil:
		apiError(ctx, fasthttp.StatusInternalServerError, "credential %q: %v", raw, err)
	default:
		writeJSON(ctx, fasthttp.StatusOK, api.GateRevokedJSON{Revoked: gateCredential(info)})
	}
}

func (a *API) gateSignOut(ctx *fasthttp.RequestCtx, raw string) {
	user, ok := accountName(ctx, raw)
	if !ok {
		return
	}
	found, err := a.Gate.SignOut(user)
	switch {
	case err != nil:
		apiError(ctx, fasthttp.StatusInternalServerError, "username %q: %v", user, err)
	case !found:
		apiError(ctx, fasthttp.StatusNotFound, "username %q has no gate credential", user)
	default:
		writeJSON(ctx, fasthttp.StatusOK, api.GateSignedOutJSON{SignedOut: user})
	}
}
