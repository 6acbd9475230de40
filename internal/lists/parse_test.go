package lists

import (
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		max  int
		want []string
		skip Parsed // counts only
		err  bool
	}{
		{name: "spamhaus drop", max: 10,
			in:   "; Spamhaus DROP List 2026/12/01 - (c) 2026 The Spamhaus Project\n; Last-Modified: Tue, 1 Dec 2026\n1.10.16.0/20 ; SBL256894\r\n2.56.192.0/22 ; SBL459831\n",
			want: []string{"1.10.16.0/20", "2.56.192.0/22"}},
		{name: "firehol netset with bogons", max: 10,
			in:   "#\n# firehol_level1\n#\n0.0.0.0/8\n10.0.0.0/8\n100.64.0.0/10\n127.0.0.0/8\n169.254.0.0/16\n172.16.0.0/12\n192.168.0.0/16\n203.0.113.0/24\n",
			want: []string{"0.0.0.0/8", "100.64.0.0/10", "203.0.113.0/24"}, skip: Parsed{Local: 5}},
		{name: "plain list, ipv6, bare addresses, trailing text", max: 10,
			in:   "192.0.2.1\n2001:db8::1 tor exit\n  198.51.100.0/24\tcomment\n::1\nfe80::1\nfd00::/48\n::ffff:192.0.2.9\n",
			want: []string{"192.0.2.1/32", "2001:db8::1/128", "198.51.100.0/24", "192.0.2.9/32"}, skip: Parsed{Local: 3}},
		{name: "too wide", max: 10, in: "0.0.0.0/0\n1.0.0.0/7\n2001::/16\n2001:db8::/32\n",
			want: []string{"2001:db8::/32"}, skip: Parsed{Wide: 3}},
		{name: "wide entry overlapping a private range", max: 10, in: "172.0.0.0/8\n", skip: Parsed{Local: 1}},
		{name: "some junk is tolerated", max: 10, in: "192.0.2.1\nnot-an-address\n198.51.100.1\n",
			want: []string{"192.0.2.1/32", "198.51.100.1/32"}, skip: Parsed{Malformed: 1}},
		{name: "limit", max: 2, in: "192.0.2.1\n192.0.2.2\n192.0.2.3\n",
			want: []string{"192.0.2.1/32", "192.0.2.2/32"}, skip: Parsed{Cut: 1}},
		{name: "html error page", max: 10, in: "<html>\n<head><title>502 Bad Gateway</title></head>\n<body>192.0.2.1</body>\n</html>\n", err: true},
		{name: "empty", max: 10, in: ""},
		{name: "comments only", max: 10, in: "# nothing today\n; nor here\n"},
		{name: "long line", max: 10, in: strings.Repeat("x", 70000) + "\n192.0.2.1\n192.0.2.2\n",
			want: []string{"192.0.2.1/32", "192.0.2.2/32"}, skip: Parsed{Malformed: 1}},
		{name: "zone and control characters", max: 10, in: "fe80::1%eth0\n192.0.2.1\x1b[31m\n192.0.2.7\n192.0.2.8\n192.0.2.9\n", want: []string{"192.0.2.7/32", "192.0.2.8/32", "192.0.2.9/32"}, skip: Parsed{Malformed: 2}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in), tc.max)
			if tc.err {
				if err == nil {
					t.Fatalf("Parse = %v, want an error", got.Prefixes)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var gs []string
			for _, p := range got.Prefixes {
				gs = append(gs, p.String())
			}
			if !slices.Equal(gs, tc.want) {
				t.Errorf("prefixes = %v, want %v", gs, tc.want)
			}
			if got.Wide != tc.skip.Wide || got.Local != tc.skip.Local || got.Malformed != tc.skip.Malformed || got.Cut != tc.skip.Cut {
				t.Errorf("skipped wide/local/malformed/cut = %d/%d/%d/%d, want %d/%d/%d/%d", got.Wide, got.Local, got.Malformed, got.Cut,
					tc.skip.Wide, tc.skip.Local, tc.skip.Malformed, tc.skip.Cut)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"192.0.2.1\n", "; c\n1.10.16.0/20 ; SBL1\n", "2001:db8::/32 x\r\n", "10.0.0.0/8\n", "\x00\xff\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(strings.NewReader(s), 100)
		if err != nil {
			return
		}
		if len(p.Prefixes) > 100 {
			t.Fatalf("%d prefixes over the limit", len(p.Prefixes))
		}
		for _, q := range p.Prefixes {
			if wide(q) || isLocal(q) || q != q.Masked() || q.Addr().Is4In6() || q.Addr().Zone() != "" {
				t.Fatalf("kept %s", q)
			}
		}
	})
}
