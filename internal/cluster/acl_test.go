package cluster

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/decide"
	"github.com/doorman/doorman/internal/engine"
	"github.com/doorman/doorman/internal/testproc"
)

// docACLs returns the ACL SETUSER lines of docs/cluster.md, and the password
// they set.
func docACLs(t *testing.T) ([]string, string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "cluster.md"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	pw := ""
	for line := range strings.SplitSeq(string(doc), "\n") {
		if !strings.HasPrefix(line, "ACL SETUSER doorman ") {
			continue
		}
		lines = append(lines, line)
		for f := range strings.FieldsSeq(line) {
			if p, ok := strings.CutPrefix(f, ">"); ok {
				pw = p
			}
		}
	}
	if len(lines) == 0 || pw == "" {
		t.Fatal("docs/cluster.md shows no ACL SETUSER doorman line with a >password")
	}
	return lines, pw
}

// exercise runs every operation doorman makes on Redis through two doormen
// on url with prefix pfx, and a third that joins afterwards.
func exercise(t *testing.T, url, pfx string) []*node {
	t.Helper()
	na, a := startAccounts(t, url, pfx)
	nb, b := startAccounts(t, url, pfx)
	now := time.Now()
	ip := netip.MustParseAddr("203.0.113.50")
	var res engine.Failed
	var err error
	for range testPolicy.MaxFailures {
		if res, err = na.local.Fail(ctx, ip, "", now); err != nil {
			t.Fatal(err)
		}
	}
	if !res.Banned {
		t.Fatalf("failures did not ban: %+v", res)
	}
	waitFor(t, "ban on b", 3*time.Second, func() bool { return banned(nb.core, ip.String(), now) })
	other := netip.MustParseAddr("203.0.113.51")
	na.local.Fail(ctx, other, "", now)
	if got := nb.local.Explain(ctx, other, now).Failures; got != 1 {
		t.Errorf("failures seen from b: %d, want 1", got)
	}
	if _, _, err := nb.local.Succeed(ctx, other, now); err != nil {
		t.Fatal(err)
	}
	if _, err := na.local.Ban(ctx, netip.MustParsePrefix("198.51.100.0/24"), time.Hour, "acl", now); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "manual ban on b", 3*time.Second, func() bool { return banned(nb.core, "198.51.100.7", now) })
	if _, err := nb.local.Unban(ctx, netip.MustParseAddr("198.51.100.7"), now); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "unban on a", 3*time.Second, func() bool { return !banned(na.core, "198.51.100.7", now) })
	// A ban made while Redis was away, pushed at a resync.
	pushed := decide.Ban{Key: netip.MustParsePrefix("192.0.2.60/32"), Until: now.Add(time.Hour), Count: 1, Failures: 5}
	na.core.Apply(pushed, now)
	if err := na.c.push(ctx, []decide.Ban{pushed}, now); err != nil {
		t.Fatal(err)
	}
	// Accounts: a lock across doormen, a device token, an unlock.
	tok, err := a.SucceedAccount(ctx, "admin", "", now)
	if err != nil || tok.Token == "" {
		t.Fatalf("token: %+v %v", tok, err)
	}
	for _, s := range []*Accounts{a, b, a, b} {
		if _, err := s.FailAccount(ctx, "admin", "", now); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "lock on a", 3*time.Second, func() bool { return !a.Attempt("admin", "", now).Allow })
	if _, err := b.FailAccount(ctx, "admin", tok.Token, now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.SucceedAccount(ctx, "admin", tok.Token, now); err != nil {
		t.Fatal(err)
	}
	if u, err := b.Unlock(ctx, "admin", now); !u.Found || err != nil {
		t.Fatalf("unlock: %+v %v", u, err)
	}
	waitFor(t, "unlock on a", 3*time.Second, func() bool { return a.Attempt("admin", "", now).Allow })
	// A doorman joining loads every ban (SCAN, HGETALL) and the device key.
	nc, _ := startAccounts(t, url, pfx)
	for _, want := range []string{ip.String(), "192.0.2.60"} {
		if !banned(nc.core, want, now) {
			t.Errorf("the joining doorman does not ban %s", want)
		}
	}
	return []*node{na, nb, nc}
}

// The ACLs docs/cluster.md shows are enough for everything doorman does, and
// they do keep the user to doorman's keys and channel.
func TestRedisACL(t *testing.T) {
	lines, pw := docACLs(t)
	for i, line := range lines {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			r := ownRedis(t)
			admin := rawClient(t, r.URL)
			args := []any{}
			for f := range strings.FieldsSeq(line) {
				args = append(args, f)
			}
			if err := admin.Do(ctx, args...).Err(); err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			url := "redis://doorman:" + pw + "@127.0.0.1:" + strconv.Itoa(r.Port) + "/0"
			nodes := exercise(t, url, "doorman:")
			for i, n := range nodes {
				if got := n.c.errors.Get(); got != 0 || !n.c.Up() {
					t.Errorf("doorman %d: %d Redis errors, up %v\n%s", i, got, n.c.Up(), n.log)
				}
			}
			log, err := admin.Do(ctx, "ACL", "LOG").Slice()
			if err != nil || len(log) != 0 {
				t.Errorf("ACL LOG after doorman's operations: %v %v", log, err)
			}
			// And the user is limited: no other key, channel or dangerous command.
			user := rawClient(t, url)
			for _, cmd := range [][]any{{"SET", "app:session", "x"}, {"PUBLISH", "app:events", "x"}, {"FLUSHALL"}, {"CONFIG", "GET", "*"}} {
				if err := user.Do(ctx, cmd...).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
					t.Errorf("%v as doorman: %v, want NOPERM", cmd, err)
				}
			}
		})
	}
}

// tlsFiles writes a CA and a server certificate for 127.0.0.1 signed by it.
func tlsFiles(t *testing.T) (ca, cert, key string) {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "doorman test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("redis.pem", "CERTIFICATE", srvDER), write("redis.key", "PRIVATE KEY", keyDER)
}

// tlsChildURL names the rediss:// URL TestRedisTLS runs doorman on in a
// child process: Go reads SSL_CERT_FILE once per process.
const tlsChildURL = "DOORMAN_TEST_TLS_URL"

// doorman connects over rediss:// to a redis-server with a certificate of a
// private CA, trusted through SSL_CERT_FILE only, and refuses it without.
func TestRedisTLS(t *testing.T) {
	if url := os.Getenv(tlsChildURL); url != "" {
		exercise(t, url, prefix(t))
		return
	}
	requireRedisServer(t)
	ca, cert, key := tlsFiles(t)
	tlsPort, err := testproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	r, err := spawnRedis(0, "--tls-port", strconv.Itoa(tlsPort), "--tls-cert-file", cert, "--tls-key-file", key,
		"--tls-ca-cert-file", ca, "--tls-auth-clients", "no")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	url := "rediss://127.0.0.1:" + strconv.Itoa(tlsPort) + "/0"

	// This process trusts the system's roots only.
	c, err := NewClient(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var unknown x509.UnknownAuthorityError
	if err := c.Ping(ctx).Err(); !errors.As(err, &unknown) {
		t.Fatalf("PING over TLS without the CA: %v, want an unknown authority", err)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestRedisTLS$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), tlsChildURL+"="+url, "SSL_CERT_FILE="+ca, "SSL_CERT_DIR="+t.TempDir())
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "--- PASS: TestRedisTLS") {
		t.Fatalf("doorman over rediss:// with SSL_CERT_FILE: %v\n%s", err, out.String())
	}
}
