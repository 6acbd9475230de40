package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/doorman/doorman/internal/server"
)

const gateUsage = "gate enroll USER | gate list | gate revoke ID | gate signout USER"

// gateCommand runs `doorman gate …` against the API.
func gateCommand(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("usage: doorman %s", gateUsage)}
	}
	sub, args := args[0], args[1:]
	if (sub == "list") != (len(args) == 0) || len(args) > 1 {
		return usageError{fmt.Errorf("usage: doorman %s", gateUsage)}
	}
	switch sub {
	case "enroll":
		var out server.EnrollmentJSON
		if err := c.do(ctx, "POST", "/v1/gate/enrollments", map[string]string{"username": args[0]}, &out, http.StatusCreated); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "enrollment link for %s, valid once until %s:\n%s\n", out.Username, out.Expires, out.URL)
		return nil
	case "list":
		var out struct {
			Credentials []struct {
				ID       string    `json:"id"`
				Username string    `json:"username"`
				Kind     string    `json:"kind"`
				Created  time.Time `json:"created"`
				Used     time.Time `json:"last_used"`
			}
		}
		if err := c.do(ctx, "GET", "/v1/gate/credentials", nil, &out, http.StatusOK); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tUSERNAME\tKIND\tCREATED\tLAST USED")
		for _, cr := range out.Credentials {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cr.ID, cr.Username, cr.Kind, cr.Created.Format(time.RFC3339), cr.Used.Format(time.RFC3339))
		}
		return tw.Flush()
	case "revoke":
		if err := c.do(ctx, "DELETE", "/v1/gate/credentials/"+url.PathEscape(args[0]), nil, nil, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s; its sessions have ended\n", args[0])
		return nil
	case "signout":
		if err := c.do(ctx, "DELETE", "/v1/gate/sessions/"+url.PathEscape(args[0]), nil, nil, http.StatusOK); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "signed %s out everywhere\n", args[0])
		return nil
	}
	return usageError{fmt.Errorf("usage: doorman %s", gateUsage)}
}
