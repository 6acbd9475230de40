package lists

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Feed is one deny feed as configured.
type Feed struct {
	Name  string
	URL   *url.URL
	Token string // sent as a bearer token; empty: none
}

// AuthoritativeHeader marks a feed that may shrink at will: a doorman's own
// GET /v1/feed, whose bans expire and are lifted.
const AuthoritativeHeader = "X-Doorman-Feed"

// maxBody bounds a feed's size: 1M CIDRs of the longest IPv6 spelling with
// a comment each stay far below it.
const maxBody = 256 << 20

// copyMeta is what is kept beside a feed's last good copy on disk.
type copyMeta struct {
	URL           string    `json:"url"`
	ETag          string    `json:"etag,omitempty"`
	LastModified  string    `json:"last_modified,omitempty"`
	Verified      time.Time `json:"verified"` // when the source last confirmed this copy (200 or 304)
	Authoritative bool      `json:"authoritative,omitempty"`
}

// feed is a feed's state: its last good copy and how the last fetch went.
// The Manager's lock guards it.
type feed struct {
	Feed
	prefixes []netip.Prefix // the last good copy
	have     bool           // a good copy is held (possibly empty)
	meta     copyMeta
	parsed   Parsed    // counts of the last good copy
	lastErr  string    // the last fetch's error; empty when it succeeded
	failedAt time.Time // when it failed
	failures uint64
}

// fetchResult is one fetch: a new copy, or no change (notModified), or an
// error that keeps the copy in use.
type fetchResult struct {
	parsed      Parsed
	meta        copyMeta
	notModified bool
}

// fetch asks the feed's source for a newer copy than the one held.
func (f *feed) fetch(ctx context.Context, c *http.Client, max int, now time.Time) (fetchResult, error) {
	if f.URL.Scheme == "file" {
		return f.fetchFile(max, now)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.URL.String(), nil)
	if err != nil {
		return fetchResult{}, err
	}
	req.Header.Set("User-Agent", "doorman")
	req.Header.Set("Accept", "text/plain")
	if f.Token != "" {
		req.Header.Set("Authorization", "Bearer "+f.Token)
	}
	if f.have && f.meta.URL == f.URL.String() {
		if f.meta.ETag != "" {
			req.Header.Set("If-None-Match", f.meta.ETag)
		}
		if f.meta.LastModified != "" {
			req.Header.Set("If-Modified-Since", f.meta.LastModified)
		}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fetchResult{}, err
	}
	defer resp.Body.Close()
	meta := copyMeta{URL: f.URL.String(), ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Verified: now,
		Authoritative: strings.EqualFold(strings.TrimSpace(resp.Header.Get(AuthoritativeHeader)), "bans")}
	switch {
	case resp.StatusCode == http.StatusNotModified && f.have:
		return fetchResult{notModified: true, meta: meta}, nil
	case resp.StatusCode != http.StatusOK:
		return fetchResult{}, fmt.Errorf("%s answered %s", f.URL.Redacted(), resp.Status)
	}
	p, err := parseBounded(resp.Body, max)
	if err != nil {
		return fetchResult{}, err
	}
	return fetchResult{parsed: p, meta: meta}, nil
}

// fetchFile reads a file:// feed; an unchanged modification time and size
// is "not modified".
func (f *feed) fetchFile(max int, now time.Time) (fetchResult, error) {
	fh, err := os.Open(f.URL.Path)
	if err != nil {
		return fetchResult{}, err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return fetchResult{}, err
	}
	meta := copyMeta{URL: f.URL.String(), LastModified: fmt.Sprintf("%d/%d", fi.ModTime().UnixNano(), fi.Size()), Verified: now}
	if f.have && f.meta.URL == meta.URL && f.meta.LastModified == meta.LastModified {
		return fetchResult{notModified: true, meta: meta}, nil
	}
	p, err := parseBounded(fh, max)
	if err != nil {
		return fetchResult{}, err
	}
	return fetchResult{parsed: p, meta: meta}, nil
}

func parseBounded(r io.Reader, max int) (Parsed, error) {
	lr := &io.LimitedReader{R: r, N: maxBody + 1}
	p, err := Parse(lr, max)
	if err != nil {
		return Parsed{}, err
	}
	if lr.N <= 0 {
		return Parsed{}, fmt.Errorf("larger than %d MiB", maxBody>>20)
	}
	return p, nil
}

// accept decides whether res replaces the copy held: a copy that shrinks
// to less than half of the one held is refused unless the source says it
// is authoritative (a doorman's ban feed), since a truncated download or a
// broken upstream would otherwise open the gate to everything it listed.
func (f *feed) accept(res fetchResult) error {
	if res.notModified {
		f.meta.Verified = res.meta.Verified
		return nil
	}
	if n, old := len(res.parsed.Prefixes), len(f.prefixes); f.have && !res.meta.Authoritative && n < old/2 {
		return fmt.Errorf("shrank from %d to %d prefixes; keeping the last good copy (a feed that may shrink sends %s: bans)", old, n, AuthoritativeHeader)
	}
	f.prefixes, f.parsed, f.meta, f.have = res.parsed.Prefixes, res.parsed, res.meta, true
	f.parsed.Prefixes = nil
	return nil
}

// Cached copies: DIR/NAME.list holds the prefixes, one per line, and
// DIR/NAME.json the copyMeta. Both are replaced by rename after an fsync,
// so a crash leaves the old copy or the new one, never half of one.

func (f *feed) save(dir string) error {
	if dir == "" {
		return nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	var b strings.Builder
	for _, p := range f.prefixes {
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	meta, err := json.Marshal(f.meta)
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, f.Name+".list"), []byte(b.String())); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, f.Name+".json"), meta)
}

// load reads the cached copy, if there is one for the same URL.
func (f *feed) load(dir string, max int) error {
	if dir == "" {
		return nil
	}
	raw, err := os.ReadFile(filepath.Join(dir, f.Name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var meta copyMeta
	if err := json.Unmarshal(raw, &meta); err != nil {
		return fmt.Errorf("%s.json: %v", f.Name, err)
	}
	if meta.URL != f.URL.String() {
		return nil // another source now: fetch afresh
	}
	fh, err := os.Open(filepath.Join(dir, f.Name+".list"))
	if err != nil {
		return err
	}
	defer fh.Close()
	p, err := parseBounded(fh, max)
	if err != nil {
		return fmt.Errorf("%s.list: %v", f.Name, err)
	}
	f.prefixes, f.parsed, f.meta, f.have = p.Prefixes, p, meta, true
	f.parsed.Prefixes = nil
	return nil
}

func writeFile(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// NewClient is the feeds' HTTP client: proxies from the environment
// (HTTPS_PROXY, as most fetchers honour), at most 5 redirects and never
// from https to http, a deadline per fetch.
func NewClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	return &http.Client{Transport: t, Timeout: timeout, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= 5 {
			return errors.New("more than 5 redirects")
		}
		if via[0].URL.Scheme == "https" && req.URL.Scheme != "https" {
			return fmt.Errorf("redirect from https to %s refused", req.URL.Scheme)
		}
		return nil
	}}
}
