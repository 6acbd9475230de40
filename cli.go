package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/doorman/doorman/internal/api"
	"github.com/doorman/doorman/internal/config"
)

// apiClient talks to a running doorman's API at DOORMAN_API_ADDR.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(cfg *config.Config) *apiClient {
	tr := &http.Transport{}
	base := "http://" + cfg.APIListen.Address
	if cfg.APIListen.Unix() {
		base = "http://doorman"
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", cfg.APIListen.Address)
		}
	}
	return &apiClient{base: base, token: cfg.APIToken, http: &http.Client{Transport: tr, Timeout: 10 * time.Second}}
}

// do sends a request and decodes a JSON answer into out (when not nil and
// the answer has a body). A status other than those in want is an error
// carrying the API's message.
func (c *apiClient) do(ctx context.Context, method, path string, in, out any, want ...int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("DOORMAN_API_ADDR: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if !slices.Contains(want, resp.StatusCode) {
		var e api.ErrorJSON
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %d: %s", method, api.Visible(path), resp.StatusCode, api.Visible(e.Error))
		}
		return fmt.Errorf("%s %s: %s", method, api.Visible(path), api.Visible(resp.Status))
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// commands are the client commands, one function each.
var commands = map[string]func(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error{
	"health":   cmdHealth,
	"bans":     cmdBans,
	"events":   cmdEvents,
	"ban":      cmdBan,
	"unban":    cmdUnban,
	"check":    cmdCheck,
	"accounts": cmdAccounts,
	"unlock":   cmdUnlock,
	"gate":     cmdGate,
}

// client runs the commands that talk to a running doorman.
func client(ctx context.Context, cfg *config.Config, cmd string, args []string, stdout io.Writer) error {
	run, ok := commands[cmd]
	if !ok {
		return usageError{fmt.Errorf("unknown command %q", cmd)}
	}
	return run(ctx, newAPIClient(cfg), args, stdout)
}

// cmdHealth: doorman health, exit 0 when the API answers /healthz.
func cmdHealth(ctx context.Context, c *apiClient, args []string, _ io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("usage: doorman health")}
	}
	return c.do(ctx, "GET", "/healthz", nil, nil, http.StatusOK)
}

// cmdBans: doorman bans, the bans in force.
func cmdBans(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("usage: doorman bans")}
	}
	var out api.BansJSON
	if err := c.do(ctx, "GET", "/v1/bans", nil, &out, http.StatusOK); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tUNTIL\tREASON\tCOUNT\tNOTE")
	for _, b := range out.Bans {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", v(b.Key), v(b.Until), v(b.Reason), b.Count, v(b.Note))
	}
	return tw.Flush()
}

// cmdEvents: doorman events [-n N], the last N events, newest first.
func cmdEvents(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("events", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	limit := fs.Int("n", api.DefaultEventsLimit, "how many, newest first")
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 || *limit < 1 || *limit > api.MaxEventsLimit {
		return usageError{fmt.Errorf("usage: doorman events [-n %d] (from 1 to %d)", api.DefaultEventsLimit, api.MaxEventsLimit)}
	}
	var out api.EventsJSON
	if err := c.do(ctx, "GET", "/v1/events?limit="+strconv.Itoa(*limit), nil, &out, http.StatusOK); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tTYPE\tKEY\tREASON\tSOURCE\tUNTIL\tCOUNT")
	for _, e := range out.Events {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", v(e.Time), v(e.Type), v(e.Key), v(e.Reason), v(e.Source), v(e.Until), e.Count)
	}
	return tw.Flush()
}

// cmdBan: doorman ban IP|CIDR [-for 1h] [-reason text], checked as the API
// checks it (api.ParseBan) before it is sent.
func cmdBan(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("ban", flag.ContinueOnError)
	dur := fs.Duration("for", 0, "ban length (default: DOORMAN_BAN_TIME, escalating)")
	reason := fs.String("reason", "", "note kept with the ban")
	target, err := oneArg(fs, args, "ban IP|CIDR [-for 1h] [-reason text]")
	if err != nil {
		return err
	}
	in := api.BanIn{IP: target, Reason: *reason}
	if *dur != 0 {
		in.Duration = dur.String()
	}
	if _, err := api.ParseBan(in.IP, in.Duration, in.Reason); err != nil {
		return usageError{err}
	}
	var b api.BanJSON
	if err := c.do(ctx, "POST", "/v1/bans", in, &b, http.StatusCreated); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "banned %s until %s\n", v(b.Key), v(b.Until))
	return nil
}

// cmdUnban: doorman unban IP|CIDR (api.ParseUnban).
func cmdUnban(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	arg, err := oneArg(flag.NewFlagSet("unban", flag.ContinueOnError), args, "unban IP|CIDR")
	if err != nil {
		return err
	}
	target, err := api.ParseUnban(arg)
	if err != nil {
		return usageError{err}
	}
	key := target.Addr.String()
	if target.Prefix.IsValid() {
		key = target.Prefix.String()
	}
	// 200 instead of 204: lifted, but an nginx cache was not refreshed, or
	// the other doormen learn it later.
	var out api.UnbanJSON
	if err := c.do(ctx, "DELETE", "/v1/bans/"+key, nil, &out, http.StatusNoContent, http.StatusOK); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unbanned %s\n", key)
	if out.ProxiesRefreshed != nil && !*out.ProxiesRefreshed {
		fmt.Fprintln(stdout, "warning: not every nginx cache was refreshed; a cached 403 may stay until DOORMAN_CACHE_TTL ends")
	}
	if out.Shared != nil && !*out.Shared {
		fmt.Fprintln(stdout, "warning: Redis is unreachable; the other doormen learn the unban when it is back")
	}
	return nil
}

// cmdCheck: doorman check IP, the decision for IP explained.
func cmdCheck(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	target, err := oneArg(flag.NewFlagSet("check", flag.ContinueOnError), args, "check IP")
	if err != nil {
		return err
	}
	var d api.DecideJSON
	if err := c.do(ctx, "GET", "/v1/decide?ip="+url.QueryEscape(target), nil, &d, http.StatusOK); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: %s (%s)", v(d.IP), v(d.Verdict), v(d.Reason))
	if d.Feed != "" {
		fmt.Fprintf(stdout, " feed %s", v(d.Feed))
	}
	if d.Until != "" {
		fmt.Fprintf(stdout, " key %s until %s", v(d.Key), v(d.Until))
	}
	fmt.Fprintf(stdout, ", %d recent failures\n", d.Failures)
	if d.Country != "" || d.ASN != "" {
		fmt.Fprintf(stdout, "country %s, network %s %s %s\n", v(orDash(d.Country)), v(orDash(d.Network)), v(orDash(d.ASN)), v(d.Org))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// cmdAccounts: doorman accounts, the locked accounts.
func cmdAccounts(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("usage: doorman accounts")}
	}
	var out api.AccountsJSON
	if err := c.do(ctx, "GET", "/v1/accounts", nil, &out, http.StatusOK); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USERNAME\tUNTIL\tFAILURES\tCOUNT")
	for _, a := range out.Accounts {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", v(a.Username), v(a.Until), a.Failures, a.Count)
	}
	return tw.Flush()
}

// cmdUnlock: doorman unlock USER, the account USER reaches (api.Username)
// unlocked and its failures forgotten.
func cmdUnlock(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	arg, err := oneArg(flag.NewFlagSet("unlock", flag.ContinueOnError), args, "unlock USER")
	if err != nil {
		return err
	}
	user, err := api.Username(arg)
	if err == nil && user == "" {
		err = errors.New("missing username")
	}
	if err != nil {
		return usageError{err}
	}
	var out api.UnlockJSON // 200 instead of 204: not yet on the other doormen
	if err := c.do(ctx, "DELETE", "/v1/accounts/"+url.PathEscape(user), nil, &out, http.StatusNoContent, http.StatusOK); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "unlocked %s\n", v(user))
	if out.Shared != nil && !*out.Shared {
		fmt.Fprintln(stdout, "warning: Redis is unreachable; the other doormen learn the unlock when it is back")
	}
	return nil
}

// v is how the CLI prints every string a server or an argument gave it: no
// control or format character reaches the terminal (api.Visible).
func v(s string) string { return api.Visible(s) }

// oneArg parses flags around exactly one positional argument.
func oneArg(fs *flag.FlagSet, args []string, use string) (string, error) {
	fs.SetOutput(io.Discard)
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return "", usageError{fmt.Errorf("%v; usage: doorman %s", err, use)}
		}
		args = fs.Args()
		if len(args) > 0 {
			pos, args = append(pos, args[0]), args[1:]
		}
	}
	if len(pos) != 1 {
		return "", usageError{fmt.Errorf("usage: doorman %s", use)}
	}
	return pos[0], nil
}
