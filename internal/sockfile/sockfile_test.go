package sockfile

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClear(t *testing.T) {
	dir := t.TempDir()
	if err := Clear("unix", filepath.Join(dir, "none.sock")); err != nil {
		t.Errorf("missing path: %v", err)
	}

	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Clear("unix", file); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("regular file: %v, want not a socket", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "keep" {
		t.Errorf("regular file changed: %q", b)
	}

	for _, network := range []string{"unix", "unixgram"} {
		path := filepath.Join(dir, network+".sock")
		closer := listen(t, network, path)
		if err := Clear(network, path); err == nil || !strings.Contains(err.Error(), "another process is listening") {
			t.Errorf("%s, live: %v, want another process is listening", network, err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s, live: socket removed: %v", network, err)
		}
		closer.Close() // a listener closed without removing its file: stale
		if _, err := os.Lstat(path); err != nil {
			t.Fatalf("%s: the stale socket file is gone before Clear: %v", network, err)
		}
		if err := Clear(network, path); err != nil {
			t.Errorf("%s, stale: %v", network, err)
		}
		if _, err := os.Lstat(path); !os.IsNotExist(err) {
			t.Errorf("%s, stale: still there (%v)", network, err)
		}
	}
}

// listen binds a socket at path that leaves its file behind when closed,
// as a killed process does.
func listen(t *testing.T, network, path string) interface{ Close() error } {
	t.Helper()
	if network == "unixgram" {
		c, err := net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ln, err := net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	return ln
}
