package server

import (
	"context"
	"encoding/base64"
	"errors"
	"html/template"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/gate"
)

// gateTimeout bounds the failures a refused sign-in writes (Redis in
// cluster mode, the state file).
const gateTimeout = 5 * time.Second

func (p *GatePages) gatePage(ctx *fasthttp.RequestCtx) {
	rd, ok := p.rd(queryRD(ctx))
	if !ok {
		p.page(ctx, fasthttp.StatusBadRequest, "message", pageData{Title: "Refused", Message: "rd is not a page of a gated site."})
		return
	}
	p.page(ctx, fasthttp.StatusOK, "gate", pageData{Title: "Sign in", RD: rd, TOTP: p.Gate.TOTP()})
}

// signInTOTP answers the TOTP form: 303 to rd signed in; 401 for a wrong
// code, 403 for a locked account (a passkey still works).
func (p *GatePages) signInTOTP(ctx *fasthttp.RequestCtx) {
	args := ctx.PostArgs()
	rd, ok := p.rd(string(args.Peek("rd")))
	if !ok {
		p.page(ctx, fasthttp.StatusBadRequest, "message", pageData{Title: "Refused", Message: "rd is not a page of a gated site."})
		return
	}
	user, err := api.Username(string(args.Peek("username")))
	if err != nil {
		user = "" // counted against the address alone
	}
	a, _, _ := p.addr.client(ctx)
	c, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	s, err := p.Gate.SignInTOTP(c, a, user, string(args.Peek("code")), p.Now())
	p.Metrics.signIn(methodTOTP, err)
	d := pageData{Title: "Sign in", RD: rd, TOTP: p.Gate.TOTP()}
	switch {
	case errors.Is(err, gate.ErrLocked):
		d.Error = "This account is locked after too many wrong codes. Sign in with a passkey, or wait."
		p.page(ctx, fasthttp.StatusForbidden, "gate", d)
	case errors.Is(err, gate.ErrWrong), errors.Is(err, gate.ErrOff):
		d.Error = "Wrong username or code."
		p.page(ctx, fasthttp.StatusUnauthorized, "gate", d)
	case err != nil:
		p.Log.Error("gate TOTP sign-in", "err", err)
		d.Error = "Sign-in failed; try again."
		p.page(ctx, fasthttp.StatusServiceUnavailable, "gate", d)
	default:
		p.setSession(ctx, s)
		// rd as it is: fasthttp's Redirect would make it absolute with the
		// Host the proxy sent, which may lack the port.
		ctx.Response.Header.Set("Location", rd)
		ctx.SetStatusCode(fasthttp.StatusSeeOther)
	}
}

func (p *GatePages) loginBegin(ctx *fasthttp.RequestCtx) {
	id, opts, err := p.Gate.BeginLogin(p.Now())
	if err != nil {
		apiError(ctx, fasthttp.StatusServiceUnavailable, "%v", err)
		return
	}
	p.setCookie(ctx, cookieLogin, id, gateCookiePath, time.Time{}, fasthttp.CookieSameSiteStrictMode)
	ctx.SetContentType("application/json")
	ctx.SetBody(opts)
}

func (p *GatePages) loginFinish(ctx *fasthttp.RequestCtx) {
	rd, ok := p.rd(queryRD(ctx))
	if !ok {
		apiError(ctx, fasthttp.StatusBadRequest, "rd is not a page of a gated site")
		return
	}
	a, _, _ := p.addr.client(ctx)
	c, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	s, err := p.Gate.FinishLogin(c, string(ctx.Request.Header.Cookie(cookieLogin)), a, ctx.PostBody(), p.Now())
	p.Metrics.signIn(methodPasskey, err)
	p.finished(ctx, s, err, rd)
}

// finished answers the end of a passkey ceremony: {"rd"} and the session
// cookie, or the refusal.
func (p *GatePages) finished(ctx *fasthttp.RequestCtx, s gate.Session, err error, rd string) {
	switch {
	case errors.Is(err, gate.ErrCeremony):
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
	case errors.Is(err, gate.ErrWrong):
		apiError(ctx, fasthttp.StatusUnauthorized, "passkey refused")
	case err != nil:
		p.Log.Error("gate passkey", "err", err)
		apiError(ctx, fasthttp.StatusServiceUnavailable, "passkey: %v", err)
	default:
		p.setSession(ctx, s)
		writeJSON(ctx, fasthttp.StatusOK, map[string]string{"rd": rd, "username": s.User})
	}
}

// enrollStart shows what the link is for, with a button to go on; it does
// not use the link up, so a link preview fetching it leaves it working.
func (p *GatePages) enrollStart(ctx *fasthttp.RequestCtx) {
	tok := string(ctx.QueryArgs().Peek("t"))
	user, err := p.Gate.PeekEnrollment(tok, p.Now())
	if err != nil {
		p.page(ctx, fasthttp.StatusNotFound, "message", pageData{Title: "Enrollment", Message: "This enrollment link is unknown, used or expired. Ask for a new one."})
		return
	}
	p.page(ctx, fasthttp.StatusOK, "enroll-start", pageData{Title: "Enrollment", User: user, Token: tok})
}

// enrollPage uses up the link's token (the POST of enrollStart's form) and
// shows the enrollment page.
func (p *GatePages) enrollPage(ctx *fasthttp.RequestCtx) {
	e, err := p.Gate.OpenEnrollment(string(ctx.PostArgs().Peek("t")), p.Now())
	switch {
	case errors.Is(err, gate.ErrEnrollUnknown):
		p.page(ctx, fasthttp.StatusNotFound, "message", pageData{Title: "Enrollment", Message: "This enrollment link is unknown, used or expired. Ask for a new one."})
		return
	case err != nil:
		p.Log.Error("gate enrollment", "err", err)
		p.page(ctx, fasthttp.StatusServiceUnavailable, "message", pageData{Title: "Enrollment", Message: "Enrollment failed; try again."})
		return
	}
	p.setCookie(ctx, cookieEnroll, e.ID, gateCookiePath, time.Time{}, fasthttp.CookieSameSiteStrictMode)
	d := pageData{Title: "Enrollment", User: e.User, RD: "/", TOTPURI: e.TOTPURI}
	if len(e.TOTPQR) > 0 {
		// doorman's own PNG, base64: safe as a data: URL.
		d.QR = template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(e.TOTPQR))
	}
	p.page(ctx, fasthttp.StatusOK, "enroll", d)
}

func (p *GatePages) registerBegin(ctx *fasthttp.RequestCtx) {
	opts, err := p.Gate.BeginRegistration(string(ctx.Request.Header.Cookie(cookieEnroll)), p.Now())
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(opts)
}

func (p *GatePages) registerFinish(ctx *fasthttp.RequestCtx) {
	a, _, _ := p.addr.client(ctx)
	c, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	s, err := p.Gate.FinishRegistration(c, string(ctx.Request.Header.Cookie(cookieEnroll)), a, ctx.PostBody(), p.Now())
	p.finished(ctx, s, err, "/")
}

// enrollTOTP confirms the TOTP secret with a code from it.
func (p *GatePages) enrollTOTP(ctx *fasthttp.RequestCtx) {
	a, _, _ := p.addr.client(ctx)
	c, cancel := context.WithTimeout(context.Background(), gateTimeout)
	defer cancel()
	s, err := p.Gate.ConfirmTOTP(c, string(ctx.Request.Header.Cookie(cookieEnroll)), a, string(ctx.PostArgs().Peek("code")), p.Now())
	switch {
	case errors.Is(err, gate.ErrCeremony), errors.Is(err, gate.ErrOff):
		p.page(ctx, fasthttp.StatusBadRequest, "message", pageData{Title: "Enrollment", Message: "This enrollment is over. Ask for a new link."})
	case errors.Is(err, gate.ErrWrong):
		p.page(ctx, fasthttp.StatusUnauthorized, "message", pageData{Title: "Enrollment", Message: "Wrong code. Go back and try the code shown now."})
	case err != nil:
		p.Log.Error("gate TOTP enrollment", "err", err)
		p.page(ctx, fasthttp.StatusServiceUnavailable, "message", pageData{Title: "Enrollment", Message: "Enrollment failed; try again."})
	default:
		p.setSession(ctx, s)
		p.page(ctx, fasthttp.StatusOK, "message", pageData{Title: "Enrollment", Message: "Your authenticator app is registered and you are signed in.", SignOut: true})
	}
}

func (p *GatePages) signOutPage(ctx *fasthttp.RequestCtx) {
	p.page(ctx, fasthttp.StatusOK, "message", pageData{Title: "Sign out", Message: "Sign out of the gate on this browser.", SignOut: true})
}

func (p *GatePages) signOut(ctx *fasthttp.RequestCtx) {
	p.setCookie(ctx, cookieSession, "", "/", time.Unix(1, 0), fasthttp.CookieSameSiteLaxMode)
	p.page(ctx, fasthttp.StatusOK, "message", pageData{Title: "Sign out", Message: "Signed out on this browser."})
}
