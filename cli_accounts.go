package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/doorman/doorman/internal/server"
)

// accountsCommand runs `doorman accounts` (the locked accounts) and
// `doorman unlock USER` (unlock it and forget its failures).
func accountsCommand(ctx context.Context, c *apiClient, cmd string, args []string, stdout io.Writer) error {
	switch cmd {
	case "accounts":
		if len(args) > 0 {
			return usageError{fmt.Errorf("usage: doorman accounts")}
		}
		var out struct{ Accounts []server.AccountJSON }
		if err := c.do(ctx, "GET", "/v1/accounts", nil, &out, http.StatusOK); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "USERNAME\tUNTIL\tFAILURES\tCOUNT")
		for _, a := range out.Accounts {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", a.Username, a.Until, a.Failures, a.Count)
		}
		return tw.Flush()
	case "unlock":
		user, err := oneArg(flag.NewFlagSet("unlock", flag.ContinueOnError), args, "unlock USER")
		if err != nil {
			return err
		}
		// 200 instead of 204: unlocked here, not yet on the other doormen.
		var out struct {
			Shared *bool `json:"shared"`
		}
		if err := c.do(ctx, "DELETE", "/v1/accounts/"+url.PathEscape(user), nil, &out, http.StatusNoContent, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unlocked %s\n", user)
		if out.Shared != nil && !*out.Shared {
			fmt.Fprintln(stdout, "warning: Redis is unreachable; the other doormen learn the unlock when it is back")
		}
		return nil
	}
	return usageError{fmt.Errorf("unknown command %q", cmd)}
}
