// Package sockfile prepares the path of a unix socket doorman listens on.
package sockfile

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"
)

// Clear makes path free for a new socket of network ("unix" or
// "unixgram"): a socket file no process answers on, left by a killed
// doorman, is removed; a socket another process listens on, or a file that
// is not a socket, is an error naming path, and nothing is removed.
func Clear(network, path string) error {
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return err
	case fi.Mode()&fs.ModeSocket == 0:
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout(network, path, 100*time.Millisecond); err == nil {
		c.Close()
		return fmt.Errorf("%s: another process is listening", path)
	}
	return os.Remove(path)
}
