package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"

	"github.com/doorman/doorman/internal/api"
)

const gateUsage = "gate enroll USER | gate list | gate revoke ID | gate signout USER"

// gateCommands are the subcommands of doorman gate, one function each; all
// but list take one argument.
var gateCommands = map[string]func(ctx context.Context, c *apiClient, arg string, stdout io.Writer) error{
	"enroll":  cmdGateEnroll,
	"list":    cmdGateList,
	"revoke":  cmdGateRevoke,
	"signout": cmdGateSignOut,
}

// cmdGate: doorman gate enroll|list|revoke|signout, the gate's credentials
// through /v1/gate/ (docs/gate.md).
func cmdGate(ctx context.Context, c *apiClient, args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return usageError{fmt.Errorf("usage: doorman %s", gateUsage)}
	}
	run, ok := gateCommands[args[0]]
	if !ok || (args[0] == "list") != (len(args) == 1) || len(args) > 2 {
		return usageError{fmt.Errorf("usage: doorman %s", gateUsage)}
	}
	arg := ""
	if len(args) == 2 {
		arg = args[1]
	}
	return run(ctx, c, arg, stdout)
}

// gateUser is arg as the API takes a username (api.Username).
func gateUser(arg string) (string, error) {
	user, err := api.Username(arg)
	if err == nil && user == "" {
		err = errors.New("missing username")
	}
	if err != nil {
		return "", usageError{err}
	}
	return user, nil
}

// cmdGateEnroll: doorman gate enroll USER, a one-time enrollment link.
func cmdGateEnroll(ctx context.Context, c *apiClient, arg string, stdout io.Writer) error {
	user, err := gateUser(arg)
	if err != nil {
		return err
	}
	var out api.EnrollmentJSON
	if err := c.do(ctx, "POST", "/v1/gate/enrollments", api.EnrollmentIn{Username: user}, &out, http.StatusCreated); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "enrollment link for %s, valid once until %s:\n%s\n", v(out.Username), v(out.Expires), v(out.URL))
	return nil
}

// cmdGateList: doorman gate list, the credentials without their secrets.
func cmdGateList(ctx context.Context, c *apiClient, _ string, stdout io.Writer) error {
	var out api.GateCredentialsJSON
	if err := c.do(ctx, "GET", "/v1/gate/credentials", nil, &out, http.StatusOK); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tUSERNAME\tKIND\tCREATED\tLAST USED")
	for _, cr := range out.Credentials {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v(cr.ID), v(cr.Username), v(cr.Kind), v(cr.Created), v(orDash(cr.Used)))
	}
	return tw.Flush()
}

// cmdGateRevoke: doorman gate revoke ID; its sessions end at once.
func cmdGateRevoke(ctx context.Context, c *apiClient, id string, stdout io.Writer) error {
	var out api.GateRevokedJSON
	if err := c.do(ctx, "DELETE", "/v1/gate/credentials/"+url.PathEscape(id), nil, &out, http.StatusOK); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "revoked %s (%s of %s); its sessions have ended\n", v(out.Revoked.ID), v(out.Revoked.Kind), v(out.Revoked.Username))
	return nil
}

// cmdGateSignOut: doorman gate signout USER, every session of USER ended.
func cmdGateSignOut(ctx context.Context, c *apiClient, arg string, stdout io.Writer) error {
	user, err := gateUser(arg)
	if err != nil {
		return err
	}
	if err := c.do(ctx, "DELETE", "/v1/gate/sessions/"+url.PathEscape(user), nil, nil, http.StatusOK); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "signed %s out everywhere\n", v(user))
	return nil
}
