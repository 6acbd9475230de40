package config

import (
	"fmt"
	"net/netip"
	"os"
	"slices"

	"github.com/doorman/doorman/decide"
)

// Lists builds the decision lists: each variable merged with its file. It
// reads the files every time it is called (at start and on SIGHUP); an error
// names the file and line and quotes the bad token, and the caller keeps the
// lists it had.
//
// A configured allow file without a single entry is an error, not an empty
// list: an empty allow list allows every address, and a file caught empty
// mid-write (truncated by `cat >`, an editor, a deploy) would open the gate.
// An empty deny file only denies nothing, and is accepted.
func (c *Config) Lists() (*decide.Lists, error) {
	spec, err := c.ListSpec()
	if err != nil {
		return nil, err
	}
	return decide.Build(spec), nil
}

// ListSpec is Lists before it is built: the static part of the lists,
// which the feeds and the country and network lists join (internal/lists).
func (c *Config) ListSpec() (decide.Spec, error) {
	allow, err := withFile(c.AllowList, "DOORMAN_ALLOW_FILE", c.AllowFile, true)
	if err != nil {
		return decide.Spec{}, err
	}
	deny, err := withFile(c.DenyList, "DOORMAN_DENY_FILE", c.DenyFile, false)
	if err != nil {
		return decide.Spec{}, err
	}
	return decide.Spec{Allow: allow, Deny: deny, Never: c.NeverBanList}, nil
}

// withFile returns base with the entries of the file at path (none when path
// is empty). needEntries refuses a file that holds no entry.
func withFile(base []netip.Prefix, name, path string, needEntries bool) ([]netip.Prefix, error) {
	if path == "" {
		return base, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer f.Close()
	extra, err := decide.ReadList(path, f)
	if err != nil {
		return nil, err
	}
	if needEntries && len(extra) == 0 {
		return nil, fmt.Errorf("%s: %s has no entries; an empty allow list would allow every address", name, path)
	}
	return append(slices.Clip(base), extra...), nil
}
