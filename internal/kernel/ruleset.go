package kernel

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Set names inside doorman's table.
const (
	setBans4  = "bans4"
	setBans6  = "bans6"
	setNever4 = "never_ban4"
	setNever6 = "never_ban6"
	setPorts  = "ports"
)

// ruleset is doorman's table, its sets and its chains, as netlink objects.
type ruleset struct {
	table                        *nftables.Table
	bans4, bans6, never4, never6 *nftables.Set
	ports                        *nftables.Set // nil: every port
	chains                       []*nftables.Chain
}

func newRuleset(o *Options) *ruleset {
	t := &nftables.Table{Name: o.Name, Family: nftables.TableFamilyINet}
	set := func(name string, typ nftables.SetDatatype, timeout bool) *nftables.Set {
		return &nftables.Set{Table: t, Name: name, KeyType: typ, Interval: true, HasTimeout: timeout}
	}
	r := &ruleset{table: t,
		bans4: set(setBans4, nftables.TypeIPAddr, true), bans6: set(setBans6, nftables.TypeIP6Addr, true),
		never4: set(setNever4, nftables.TypeIPAddr, false), never6: set(setNever6, nftables.TypeIP6Addr, false)}
	if len(o.Ports) > 0 {
		r.ports = &nftables.Set{Table: t, Name: setPorts, KeyType: nftables.TypeInetService, Constant: true}
	}
	for _, h := range o.Hooks {
		hook := nftables.ChainHookInput
		if h == "forward" {
			hook = nftables.ChainHookForward
		}
		// Before the usual filter chains (priority 0): a packet this chain
		// drops costs nothing more. Its accept ends only this chain; other
		// tables still see the packet.
		r.chains = append(r.chains, &nftables.Chain{Name: h, Table: t, Hooknum: hook, Type: nftables.ChainTypeFilter,
			Priority: nftables.ChainPriorityRef(-10), Policy: ptr(nftables.ChainPolicyAccept)})
	}
	return r
}

func ptr[T any](v T) *T { return &v }

// bansOf is the ban set of addresses like a (4 or 16 bytes).
func (r *ruleset) bansOf(is4 bool) *nftables.Set {
	if is4 {
		return r.bans4
	}
	return r.bans6
}

// rules are one chain's rules: never-ban addresses accepted first (they may
// sit inside a banned range), then new connections from banned addresses to
// the ports dropped.
func (r *ruleset) rules(c *nftables.Chain) []*nftables.Rule {
	var out []*nftables.Rule
	for _, fam := range []struct {
		proto       byte
		off, n      uint32
		never, bans *nftables.Set
	}{{unix.NFPROTO_IPV4, 12, 4, r.never4, r.bans4}, {unix.NFPROTO_IPV6, 8, 16, r.never6, r.bans6}} {
		saddr := func(s *nftables.Set) []expr.Any {
			return []expr.Any{
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: fam.off, Len: fam.n},
				&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID},
			}
		}
		nfproto := []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
			&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{fam.proto}},
		}
		out = append(out, &nftables.Rule{Table: r.table, Chain: c,
			Exprs: concat(nfproto, saddr(fam.never), []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}})})
		for _, l4 := range []byte{unix.IPPROTO_TCP, unix.IPPROTO_UDP} {
			e := concat(nfproto, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4}},
				&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
					Mask: binaryutil.NativeEndian.PutUint32(expr.CtStateBitNEW), Xor: binaryutil.NativeEndian.PutUint32(0)},
				&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: []byte{0, 0, 0, 0}},
			})
			if r.ports != nil {
				e = append(e,
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Lookup{SourceRegister: 1, SetName: r.ports.Name, SetID: r.ports.ID})
			}
			e = append(e, saddr(fam.bans)...)
			e = append(e, &expr.Counter{}, &expr.Verdict{Kind: expr.VerdictDrop})
			out = append(out, &nftables.Rule{Table: r.table, Chain: c, Exprs: e})
		}
	}
	return out
}

func concat(parts ...[]expr.Any) []expr.Any {
	var out []expr.Any
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// portElements are the ports as inet_service keys.
func portElements(ports []uint16) []nftables.SetElement {
	out := make([]nftables.SetElement, len(ports))
	for i, p := range ports {
		out[i].Key = binary.BigEndian.AppendUint16(nil, p)
	}
	return out
}

// create queues, on cc, doorman's table made anew: added (a no-op when it
// exists), deleted with whatever it held, and added again with its sets,
// chains and rules, so that one transaction replaces it whole.
func (r *ruleset) create(cc *nftables.Conn, ports []uint16) error {
	cc.AddTable(r.table)
	cc.DelTable(r.table)
	cc.AddTable(r.table)
	for _, s := range []*nftables.Set{r.bans4, r.bans6, r.never4, r.never6} {
		if err := cc.AddSet(s, nil); err != nil {
			return err
		}
	}
	if r.ports != nil {
		if err := cc.AddSet(r.ports, portElements(ports)); err != nil {
			return err
		}
	}
	for _, c := range r.chains {
		cc.AddChain(c)
		for _, rule := range r.rules(c) {
			cc.AddRule(rule)
		}
	}
	return nil
}
