package testproc

import (
	"slices"
	"testing"
)

func TestNftSet(t *testing.T) {
	// As nft 1.0.6 prints a set with an address, a prefix, a range and an
	// element with a timeout, and another table's object.
	js := `{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "bans4", "table": "doorman",
	  "type": "ipv4_addr", "flags": ["interval", "timeout"], "elem": ["203.0.113.9", {"prefix": {"addr": "198.51.100.0", "len": 24}},
	  {"range": ["192.0.2.2", "192.0.2.3"]}, {"elem": {"val": "192.0.2.1", "timeout": 3600, "expires": 3599}}]}}]}`
	got, err := NftSet([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.1", "192.0.2.2-192.0.2.3", "198.51.100.0/24", "203.0.113.9"}
	if !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, bad := range []string{`not json`, `{"nftables": [{"set": {"elem": [{"concat": ["a", 1]}]}}]}`, `{"nftables": [{"set": {"elem": [7]}}]}`} {
		if got, err := NftSet([]byte(bad)); err == nil {
			t.Errorf("NftSet(%s) = %q, want an error", bad, got)
		}
	}
}
