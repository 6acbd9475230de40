package main

import (
	"bytes"
	"context"
	"encoding/json"
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

	"github.com/doorman/doorman/internal/config"
	"github.com/doorman/doorman/internal/server"
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
		var e struct{ Error string }
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %d: %s", method, path, resp.StatusCode, e.Error)
		}
		return fmt.Errorf("%s %s: %s", method, path, resp.Status)
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// client runs the commands that talk to a running doorman.
func client(ctx context.Context, cfg *config.Config, cmd string, args []string, stdout io.Writer) error {
	c := newAPIClient(cfg)
	switch cmd {
	case "health":
		return c.do(ctx, "GET", "/healthz", nil, nil, http.StatusOK)
	case "bans":
		var out struct{ Bans []server.BanJSON }
		if err := c.do(ctx, "GET", "/v1/bans", nil, &out, http.StatusOK); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "KEY\tUNTIL\tREASON\tCOUNT\tNOTE")
		for _, b := range out.Bans {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\n", b.Key, b.Until, b.Reason, b.Count, b.Note)
		}
		return tw.Flush()
	case "events":
		fs := flag.NewFlagSet("events", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		limit := fs.Int("n", server.DefaultEventsLimit, "how many, newest first")
		if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
			return usageError{fmt.Errorf("usage: doorman events [-n %d]", server.DefaultEventsLimit)}
		}
		var out struct{ Events []server.EventJSON }
		if err := c.do(ctx, "GET", "/v1/events?limit="+strconv.Itoa(*limit), nil, &out, http.StatusOK); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tTYPE\tKEY\tREASON\tSOURCE\tUNTIL\tCOUNT")
		for _, e := range out.Events {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", e.Time, e.Type, e.Key, e.Reason, e.Source, e.Until, e.Count)
		}
		return tw.Flush()
	case "ban":
		fs := flag.NewFlagSet("ban", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		dur := fs.Duration("for", 0, "ban length (default: DOORMAN_BAN_TIME, escalating)")
		reason := fs.String("reason", "", "note kept with the ban")
		target, err := oneArg(fs, args, "ban IP|CIDR [-for 1h] [-reason text]")
		if err != nil {
			return err
		}
		in := map[string]string{"ip": target, "reason": *reason}
		if *dur > 0 {
			in["duration"] = dur.String()
		}
		var b server.BanJSON
		if err := c.do(ctx, "POST", "/v1/bans", in, &b, http.StatusCreated); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "banned %s until %s\n", b.Key, b.Until)
		return nil
	case "unban":
		target, err := oneArg(flag.NewFlagSet("unban", flag.ContinueOnError), args, "unban IP|CIDR")
		if err != nil {
			return err
		}
		// 200 instead of 204: lifted, but an nginx cache was not refreshed.
		var out struct {
			Refreshed *bool `json:"proxies_refreshed"`
		}
		if err := c.do(ctx, "DELETE", "/v1/bans/"+target, nil, &out, http.StatusNoContent, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unbanned %s\n", target)
		if out.Refreshed != nil && !*out.Refreshed {
			fmt.Fprintln(stdout, "warning: not every nginx cache was refreshed; a cached 403 may stay until DOORMAN_CACHE_TTL ends")
		}
		return nil
	case "check":
		target, err := oneArg(flag.NewFlagSet("check", flag.ContinueOnError), args, "check IP")
		if err != nil {
			return err
		}
		var d server.DecideJSON
		if err := c.do(ctx, "GET", "/v1/decide?ip="+url.QueryEscape(target), nil, &d, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: %s (%s)", d.IP, d.Verdict, d.Reason)
		if d.Until != "" {
			fmt.Fprintf(stdout, " key %s until %s", d.Key, d.Until)
		}
		fmt.Fprintf(stdout, ", %d recent failures\n", d.Failures)
		return nil
	case "accounts", "unlock":
		return accountsCommand(ctx, c, cmd, args, stdout)
	case "gate":
		return gateCommand(ctx, c, args, stdout)
	}
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}

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
