package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/testproc"
)

// An allow file without entries would allow every address: it stops the
// start with exit status 2 naming the file.
func TestEmptyAllowFileStopsStart(t *testing.T) {
	allow := filepath.Join(t.TempDir(), "allow.txt")
	if err := os.WriteFile(allow, []byte("# office\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"DOORMAN_ALLOW_FILE": allow, "DOORMAN_STATE_FILE": ""}
	for _, k := range []string{"DOORMAN_DECIDE_ADDR", "DOORMAN_API_ADDR"} {
		port, err := testproc.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		env[k] = "127.0.0.1:" + strconv.Itoa(port)
	}
	// Were the file taken, serve would run until ctx ends and return nil.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, nil, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &stdout, &stderr)
	if got := exitCode(err); got != 2 {
		t.Fatalf("exit status %d (err %v), want 2\n%s", got, err, stderr.String())
	}
	if want := "DOORMAN_ALLOW_FILE: " + allow + " has no entries"; !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %q, want it to contain %q", err, want)
	}
}

// An allow file emptied while doorman runs (truncated, or caught mid-write)
// does not replace the allow list on SIGHUP: the old lists stay in force and
// the error is logged.
func TestSIGHUPKeepsListsWhenAllowFileEmpty(t *testing.T) {
	allow := filepath.Join(t.TempDir(), "allow.txt")
	if err := os.WriteFile(allow, []byte("198.51.100.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDoorman(t, map[string]string{"DOORMAN_STATE_FILE": "", "DOORMAN_ALLOW_FILE": allow})
	if got := verdict(t, d, "198.51.100.5"); got != 204 {
		t.Fatalf("inside the allow list: %d, want 204", got)
	}
	if got := verdict(t, d, "203.0.113.9"); got != 403 {
		t.Fatalf("outside the allow list: %d, want 403", got)
	}
	if err := os.Truncate(allow, 0); err != nil {
		t.Fatal(err)
	}
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	// Wait for the reload's outcome, whichever it is.
	deadline := time.Now().Add(5 * time.Second)
	for log := d.Log(); !strings.Contains(log, "reload failed") && !strings.Contains(log, "lists reloaded"); log = d.Log() {
		if time.Now().After(deadline) {
			t.Fatalf("no reload logged within 5 s:\n%s", log)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := verdict(t, d, "203.0.113.9"); got != 403 {
		t.Errorf("outside the allow list after reloading an empty file: %d, want 403", got)
	}
	if got := verdict(t, d, "198.51.100.5"); got != 204 {
		t.Errorf("inside the allow list after reloading an empty file: %d, want 204", got)
	}
	if log, want := d.Log(), allow+" has no entries"; !strings.Contains(log, "reload failed") || !strings.Contains(log, want) {
		t.Errorf("log lacks the failed reload naming the file (%q):\n%s", want, log)
	}
}
