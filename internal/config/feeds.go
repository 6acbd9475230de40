package config

import (
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Feed is one deny feed: a name (what a denial names) and where it is
// fetched from.
type Feed struct {
	Name  string
	URL   *url.URL
	Token string // bearer token sent with the request; empty: none
}

// validateFeeds parses the feeds and the country and network lists.
func (c *Config) validateFeeds() error {
	c.Feeds = nil
	for tok := range strings.SplitSeq(c.DenyFeeds, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		name, raw, ok := strings.Cut(tok, "=")
		if !ok || !validName(name) {
			return &Error{Var: "DOORMAN_DENY_FEEDS", Value: tok, Problem: "is not NAME=URL (a name of 1 to 32 letters, digits, - or _)"}
		}
		u, err := url.Parse(raw)
		if err != nil || !(u.Scheme == "https" || u.Scheme == "http" || u.Scheme == "file") ||
			u.Scheme != "file" && u.Host == "" || u.Scheme == "file" && u.Path == "" {
			return &Error{Var: "DOORMAN_DENY_FEEDS", Value: tok, Problem: "has no https://, http:// or file:// URL"}
		}
		if slices.ContainsFunc(c.Feeds, func(f Feed) bool { return f.Name == name }) {
			return &Error{Var: "DOORMAN_DENY_FEEDS", Value: name, Problem: "names two feeds"}
		}
		c.Feeds = append(c.Feeds, Feed{Name: name, URL: u})
	}
	for tok := range strings.SplitSeq(c.FeedTokens, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		name, token, ok := strings.Cut(tok, "=")
		i := slices.IndexFunc(c.Feeds, func(f Feed) bool { return f.Name == name })
		switch {
		case !ok || token == "" || strings.ContainsAny(token, " \t\r\n"):
			return &Error{Var: "DOORMAN_FEED_TOKENS", Value: name + "=(hidden)", Problem: "is not NAME=TOKEN (a token without white space)"}
		case i < 0:
			return &Error{Var: "DOORMAN_FEED_TOKENS", Value: name, Problem: "is not a feed of DOORMAN_DENY_FEEDS"}
		}
		c.Feeds[i].Token = token
	}
	checks := []struct {
		ok      bool
		name    string
		val     any
		problem string
	}{
		{c.FeedRefresh >= time.Second && c.FeedRefresh <= 24*time.Hour, "DOORMAN_FEED_REFRESH", c.FeedRefresh, "must be from 1s to 24h"},
		{c.FeedMaxPrefixes >= 1 && c.FeedMaxPrefixes <= 10_000_000, "DOORMAN_FEED_MAX_PREFIXES", c.FeedMaxPrefixes, "must be from 1 to 10000000"},
	}
	for _, k := range checks {
		if !k.ok {
			return &Error{Var: k.name, Value: fmt.Sprint(k.val), Problem: k.problem}
		}
	}
	var err error
	if c.AllowCC, err = countries("DOORMAN_ALLOW_COUNTRIES", c.AllowCountries); err != nil {
		return err
	}
	if c.DenyCC, err = countries("DOORMAN_DENY_COUNTRIES", c.DenyCountries); err != nil {
		return err
	}
	if len(c.AllowCC)+len(c.DenyCC) > 0 && c.GeoIPDB == "" {
		return &Error{Var: "DOORMAN_GEOIP_DB", Value: "", Problem: "must be set for DOORMAN_ALLOW_COUNTRIES and DOORMAN_DENY_COUNTRIES"}
	}
	c.DenyASNList = nil
	for tok := range strings.SplitSeq(c.DenyASNs, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimPrefix(strings.ToUpper(tok), "AS"), 10, 32)
		if err != nil || n == 0 {
			return &Error{Var: "DOORMAN_DENY_ASNS", Value: tok, Problem: "is not an AS number (AS64500 or 64500)"}
		}
		c.DenyASNList = append(c.DenyASNList, uint32(n))
	}
	if len(c.DenyASNList) > 0 && c.ASNDB == "" {
		return &Error{Var: "DOORMAN_ASN_DB", Value: "", Problem: "must be set for DOORMAN_DENY_ASNS"}
	}
	return nil
}

// countries parses ISO 3166-1 alpha-2 codes, upper-cased, without repeats.
func countries(name, s string) ([]string, error) {
	var out []string
	for tok := range strings.SplitSeq(s, ",") {
		tok = strings.TrimSpace(tok)
		if tok == "" {
			continue
		}
		cc := strings.ToUpper(tok)
		if len(cc) != 2 || cc[0] < 'A' || cc[0] > 'Z' || cc[1] < 'A' || cc[1] > 'Z' {
			return nil, &Error{Var: name, Value: tok, Problem: "is not a two-letter ISO country code"}
		}
		if !slices.Contains(out, cc) {
			out = append(out, cc)
		}
	}
	return out, nil
}

// validName is a feed name: 1 to 32 letters, digits, - or _.
func validName(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
