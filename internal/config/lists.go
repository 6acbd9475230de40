package config

import (
	"net/netip"
	"os"
	"slices"

	"github.com/doorman/doorman/decide"
)

// Lists builds the decision lists: each variable merged with its file. It
// reads the files every time it is called (at start and on SIGHUP); an error
// names the file and line and quotes the bad token, and the caller keeps the
// lists it had.
func (c *Config) Lists() (*decide.Lists, error) {
	allow, err := withFile(c.AllowList, c.AllowFile)
	if err != nil {
		return nil, err
	}
	deny, err := withFile(c.DenyList, c.DenyFile)
	if err != nil {
		return nil, err
	}
	return decide.NewLists(allow, deny, c.NeverBanList), nil
}

func withFile(base []netip.Prefix, path string) ([]netip.Prefix, error) {
	if path == "" {
		return base, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	extra, err := decide.ReadList(path, f)
	if err != nil {
		return nil, err
	}
	return append(slices.Clip(base), extra...), nil
}
