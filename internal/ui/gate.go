package ui

import (
	"errors"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/gate"
)

// UseGate shows the gate's credentials, with revoke buttons and an
// enrollment form; call it before the page is served.
func (u *UI) UseGate(g *gate.Gate) { u.o.Gate = g }

// gateRevoke revokes one credential; its sessions end at once.
func (u *UI) gateRevoke(ctx *fasthttp.RequestCtx) string {
	if u.o.Gate == nil {
		return "The gate is off."
	}
	raw := string(ctx.PostArgs().Peek("id"))
	id, err := gate.ParseID(raw)
	if err != nil {
		return err.Error()
	}
	info, err := u.o.Gate.Revoke(id)
	u.o.Log.Info("ui gate revoke", "id", trunc(raw), "err", err, "peer", peer(ctx).String())
	switch {
	case errors.Is(err, gate.ErrNotFound):
		return "No credential " + trunc(raw) + "."
	case err != nil:
		return "Not revoked: " + err.Error()
	}
	return "Revoked " + info.User + "'s " + info.Kind + "; its sessions have ended."
}

// gateEnroll makes an enrollment link, shown once in the flash.
func (u *UI) gateEnroll(ctx *fasthttp.RequestCtx) string {
	if u.o.Gate == nil {
		return "The gate is off."
	}
	user, err := api.Username(string(ctx.PostArgs().Peek("user")))
	if err != nil || user == "" {
		return "A username is needed."
	}
	tok, exp, err := u.o.Gate.Enroll(user, u.o.Now())
	u.o.Log.Info("ui gate enroll", "user", trunc(user), "err", err, "peer", peer(ctx).String())
	if err != nil {
		return "No link: " + err.Error()
	}
	return "Enrollment link for " + user + ", valid once until " + exp.Format("15:04 UTC") + ": " + u.o.Gate.EnrollURL(tok)
}
