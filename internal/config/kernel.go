package config

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// nftName is what doorman accepts as a table name: nft's identifiers, short.
var nftName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)

// validateKernel checks the kernel bans' variables (docs/kernel.md) and
// parses DOORMAN_NFT_HOOKS and DOORMAN_NFT_PORTS.
func (c *Config) validateKernel() error {
	if c.NFTTable != "" && !nftName.MatchString(c.NFTTable) {
		return &Error{Var: "DOORMAN_NFT_TABLE", Value: c.NFTTable, Problem: "is not a table name (a letter, then up to 63 letters, digits or _)"}
	}
	if c.NFTTable != "" && c.DryRun {
		// A dry run answers 204 always; the kernel must not drop either.
		return &Error{Var: "DOORMAN_NFT_TABLE", Value: c.NFTTable, Problem: "must be empty with DOORMAN_DRY_RUN=true"}
	}
	c.NFTHookList = nil
	for _, h := range strings.Split(c.NFTHooks, ",") {
		h = strings.TrimSpace(h)
		if h != "input" && h != "forward" {
			return &Error{Var: "DOORMAN_NFT_HOOKS", Value: c.NFTHooks, Problem: "must be input, forward or input,forward"}
		}
		if !slices.Contains(c.NFTHookList, h) {
			c.NFTHookList = append(c.NFTHookList, h)
		}
	}
	c.NFTPortList = nil
	if strings.TrimSpace(c.NFTPorts) != "all" {
		for _, s := range strings.Split(c.NFTPorts, ",") {
			p, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
			if err != nil || p == 0 {
				return &Error{Var: "DOORMAN_NFT_PORTS", Value: c.NFTPorts, Problem: "must be ports from 1 to 65535, comma-separated, or all"}
			}
			if !slices.Contains(c.NFTPortList, uint16(p)) {
				c.NFTPortList = append(c.NFTPortList, uint16(p))
			}
		}
	}
	if c.NFTMinCount < 1 || c.NFTMinCount > 1000 {
		return &Error{Var: "DOORMAN_NFT_MIN_COUNT", Value: strconv.Itoa(c.NFTMinCount), Problem: "must be from 1 to 1000"}
	}
	if c.NFTCheck < time.Second || c.NFTCheck > time.Hour {
		return &Error{Var: "DOORMAN_NFT_CHECK", Value: c.NFTCheck.String(), Problem: "must be from 1s to 1h"}
	}
	return nil
}
