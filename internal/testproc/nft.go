package testproc

import (
	"encoding/json"
	"fmt"
	"slices"
)

// NftSet lists the elements of one set in the output of `nft -j list set …`,
// sorted, as nft names them: an address ("192.0.2.1"), a prefix
// ("198.51.100.0/24") or a range ("192.0.2.2-192.0.2.3"). An element with a
// timeout or a comment is its value.
func NftSet(js []byte) ([]string, error) {
	var doc struct {
		Nftables []struct {
			Set *struct {
				Elem []json.RawMessage `json:"elem"`
			} `json:"set"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("nft -j: %w", err)
	}
	var out []string
	for _, o := range doc.Nftables {
		if o.Set == nil {
			continue
		}
		for _, e := range o.Set.Elem {
			s, err := nftElem(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

// nftElem is one element: a string, {"prefix": {"addr", "len"}},
// {"range": [lo, hi]}, or {"elem": {"val": one of those, …}}.
func nftElem(raw json.RawMessage) (string, error) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return "", fmt.Errorf("nft -j element %s: %w", raw, err)
	}
	for {
		switch m := v.(type) {
		case string:
			return m, nil
		case map[string]any:
			if e, ok := m["elem"].(map[string]any); ok {
				v = e["val"]
				continue
			}
			if p, ok := m["prefix"].(map[string]any); ok {
				return fmt.Sprintf("%v/%v", p["addr"], p["len"]), nil
			}
			if r, ok := m["range"].([]any); ok && len(r) == 2 {
				return fmt.Sprintf("%v-%v", r[0], r[1]), nil
			}
		}
		return "", fmt.Errorf("nft -j element %s: not an address, prefix or range", raw)
	}
}
