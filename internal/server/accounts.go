package server

import (
	"context"
	"net/url"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/api"
)

// The account side of the API: POST /v1/attempts (the pre-authentication
// check, counting nothing), GET /v1/accounts (the locks in force), DELETE
// /v1/accounts/{username} (unlock), and the "account" of /v1/failures and
// the device token of /v1/successes. Usernames are normalised
// (decide.NormalizeUsername) before anything else; one that cannot be (over
// 256 bytes, before or after, not UTF-8, or with a control or format
// character inside) is a 400 that changes nothing.

func (a *API) accountsOn() bool { return a.Accounts != nil && a.Accounts.Enabled() }

// handleAccounts routes /v1/attempts and /v1/accounts[/…].
func (a *API) handleAccounts(c context.Context, ctx *fasthttp.RequestCtx, path string) {
	switch {
	case path == "/v1/attempts":
		if a.method(ctx, "POST") {
			a.attempt(ctx)
		}
	case path == "/v1/accounts":
		if a.method(ctx, "GET") {
			a.listAccounts(ctx)
		}
	case strings.HasPrefix(path, "/v1/accounts/"):
		if a.method(ctx, "DELETE") {
			a.unlock(c, ctx)
		}
	default:
		apiError(ctx, fasthttp.StatusNotFound, "no such endpoint: %s", path)
	}
}

// accountName normalises a request's username; "" when none was given. A
// username that cannot be normalised is answered 400.
func accountName(ctx *fasthttp.RequestCtx, raw string) (string, bool) {
	u, err := api.Username(raw)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "%v", err)
		return "", false
	}
	return u, true
}

// attempt answers POST /v1/attempts {"ip","username"?,"device"?}: the
// address's verdict, then the account's. It counts nothing but the answer
// (doorman_account_attempts_total). In dry-run mode it always allows and
// names the would-be refusal as dry-run-<reason>.
func (a *API) attempt(ctx *fasthttp.RequestCtx) {
	in, ip, ok := readAddr(ctx)
	if !ok {
		return
	}
	user := in.Username
	now := a.Now()
	out := api.AttemptJSON{Allow: true}
	if v := a.Service.Decide(ip, now); !v.Allow {
		out = api.AttemptJSON{Reason: v.Reason.String()}
		if v.Reason == decide.Banned {
			out.RetryAfter = retryAfter(v.Until, now)
		}
	} else if user != "" && a.accountsOn() {
		if at := a.Accounts.Attempt(user, in.Device, now); !at.Allow {
			out = api.AttemptJSON{Reason: at.Reason.String(), RetryAfter: retryAfter(at.Until, now)}
		}
	}
	if a.Accounts != nil {
		result := out.Reason
		if out.Allow {
			result = "allow"
		}
		a.Accounts.CountAttempt(result)
	}
	if !out.Allow && a.DryRun {
		a.Log.Info("dry-run: attempt would be refused", "ip", ip.String(), "username", user, "reason", out.Reason)
		out = api.AttemptJSON{Allow: true, Reason: "dry-run-" + out.Reason}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// accountFailure counts the account side of a failure of user (normalised;
// nothing when empty or accounts are off) and returns it for the answer.
func (a *API) accountFailure(c context.Context, user, device string, now time.Time) (*api.AccountJSON, error) {
	if user == "" || !a.accountsOn() {
		return nil, nil
	}
	res, err := a.Accounts.FailAccount(c, user, device, now)
	out := &api.AccountJSON{Username: user, Failures: res.Failures, Locked: res.Locked}
	if res.Locked {
		out.Until, out.Count = res.Until.Format(time.RFC3339), res.Count
	}
	return out, err
}

// deviceToken records the account side of a success of user and adds the
// device token issued for it to out (nothing when user is empty or accounts
// are off).
func (a *API) deviceToken(c context.Context, out *api.SuccessJSON, user, device string, now time.Time) error {
	if user == "" || !a.accountsOn() {
		return nil
	}
	t, err := a.Accounts.SucceedAccount(c, user, device, now)
	if err != nil {
		return err
	}
	if t.Token != "" {
		out.Device, out.DeviceExpires = t.Token, t.Expires.Format(time.RFC3339)
	}
	return nil
}

func (a *API) listAccounts(ctx *fasthttp.RequestCtx) {
	out := api.AccountsJSON{Accounts: []api.AccountJSON{}}
	if a.accountsOn() {
		for _, l := range a.Accounts.Locks(a.Now()) {
			out.Accounts = append(out.Accounts, api.AccountJSON{Username: l.Username, Failures: l.Failures, Locked: true,
				Until: l.Until.Format(time.RFC3339), Count: l.Count})
		}
	}
	writeJSON(ctx, fasthttp.StatusOK, out)
}

// unlock answers DELETE /v1/accounts/{username} (path-escaped): 204 when the
// account was tracked (its failures, lock and escalation are forgotten),
// 200 with {"shared":false} when it was but the other doormen learn it only
// once Redis is reachable again, else 404.
func (a *API) unlock(c context.Context, ctx *fasthttp.RequestCtx) {
	// The original path: fasthttp's decoded one has "/../" and "//" folded.
	raw, _ := strings.CutPrefix(string(ctx.URI().PathOriginal()), "/v1/accounts/")
	name, err := url.PathUnescape(raw)
	if err != nil {
		apiError(ctx, fasthttp.StatusBadRequest, "username: %q is not path-escaped", truncate(raw, 64))
		return
	}
	user, ok := accountName(ctx, name)
	if !ok {
		return
	}
	if user == "" {
		apiError(ctx, fasthttp.StatusBadRequest, "missing username")
		return
	}
	if !a.accountsOn() {
		apiError(ctx, fasthttp.StatusNotFound, "accounts are off (DOORMAN_ACCOUNT_MAX_FAILURES=0)")
		return
	}
	r, err := a.Accounts.Unlock(c, user, a.Now())
	if err != nil {
		a.serviceError(ctx, err)
		return
	}
	if !r.Found {
		apiError(ctx, fasthttp.StatusNotFound, "no account %q is tracked", user)
		return
	}
	noContent(ctx, r.Receipt)
}
