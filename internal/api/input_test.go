package api_test

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/doorman/doorman/internal/api"
)

func TestParseBan(t *testing.T) {
	for _, tc := range []struct {
		name, ip, duration, note string
		want                     api.Ban
		field                    string // of the error; "" none
	}{
		{"address", "192.0.2.7", "", "", api.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32")}, ""},
		{"space around", " 192.0.2.7\t", " 90s ", "x", api.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Duration: 90 * time.Second, Note: "x"}, ""},
		{"CIDR masked", "198.51.100.9/24", "1h", "", api.Ban{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Duration: time.Hour}, ""},
		{"mapped", "::ffff:192.0.2.7", "", "", api.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32")}, ""},
		{"longest", "192.0.2.7", "87600h", "", api.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Duration: api.MaxManualBan}, ""},
		{"note of 256 bytes", "192.0.2.7", "", strings.Repeat("n", 256), api.Ban{Prefix: netip.MustParsePrefix("192.0.2.7/32"), Note: strings.Repeat("n", 256)}, ""},
		{"missing", "", "", "", api.Ban{}, "ip"},
		{"not an address", "nonsense", "", "", api.Ban{}, "ip"},
		{"zone", "fe80::1%eth0", "", "", api.Ban{}, "ip"},
		{"too short", "192.0.2.7", "999ms", "", api.Ban{}, "duration"},
		{"zero", "192.0.2.7", "0s", "", api.Ban{}, "duration"},
		{"negative", "192.0.2.7", "-1h", "", api.Ban{}, "duration"},
		{"too long", "192.0.2.7", "87600h1s", "", api.Ban{}, "duration"},
		{"not a duration", "192.0.2.7", "5y", "", api.Ban{}, "duration"},
		{"note of 257 bytes", "192.0.2.7", "", strings.Repeat("n", 257), api.Ban{}, "reason"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := api.ParseBan(tc.ip, tc.duration, tc.note)
			var fe *api.FieldError
			switch {
			case tc.field == "" && err != nil:
				t.Fatalf("error %v", err)
			case tc.field != "" && (!errors.As(err, &fe) || fe.Field != tc.field):
				t.Fatalf("error %v, want one for %q", err, tc.field)
			case tc.field == "" && got != tc.want:
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseUnban(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want api.Unban
		ok   bool
	}{
		{"192.0.2.7", api.Unban{Addr: netip.MustParseAddr("192.0.2.7")}, true},
		{" 2001:db8::1 ", api.Unban{Addr: netip.MustParseAddr("2001:db8::1")}, true},
		{"198.51.100.0/24", api.Unban{Prefix: netip.MustParsePrefix("198.51.100.0/24")}, true},
		{"", api.Unban{}, false},
		{"<script>", api.Unban{}, false},
		{"10.0.0.0/33", api.Unban{}, false},
		{"fe80::1%eth0", api.Unban{}, false},
	} {
		got, err := api.ParseUnban(tc.in)
		if (err == nil) != tc.ok || tc.ok && got != tc.want {
			t.Errorf("ParseUnban(%q) = %+v, %v; want %+v, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestUsername: the rule of every listener is decide's normalisation.
func TestUsername(t *testing.T) {
	for _, tc := range []struct{ in, want string }{{"ADMIN ", "admin"}, {"", ""}, {"ａｄｍｉｎ", "admin"}} {
		if got, err := api.Username(tc.in); err != nil || got != tc.want {
			t.Errorf("Username(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, in := range []string{"ad\nmin", strings.Repeat("a", 257), "\xff", "adm\u202enimda"} {
		var fe *api.FieldError
		if _, err := api.Username(in); !errors.As(err, &fe) || fe.Field != "username" {
			t.Errorf("Username(%q): %v, want a username error", in, err)
		}
	}
}
