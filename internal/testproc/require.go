package testproc

import (
	"os"
	"testing"
)

// Require ends a test that cannot run here (a tool missing, no root): it
// skips with msg, which says how to install what is missing, or fails when
// DOORMAN_TEST_REQUIRE_ALL=1 or CI=true, where nothing may skip.
func Require(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("DOORMAN_TEST_REQUIRE_ALL") == "1" || os.Getenv("CI") == "true" {
		t.Fatal(msg + " (DOORMAN_TEST_REQUIRE_ALL=1 or CI=true: nothing skips)")
	}
	t.Skip(msg)
}
