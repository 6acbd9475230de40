package config

import (
	"fmt"
	"strings"
	"time"

	"github.com/doorman/doorman/decide"
)

// validateAccounts checks the DOORMAN_ACCOUNT_*, DOORMAN_MAX_ACCOUNTS and
// DOORMAN_DEVICE_* variables. The device key is never quoted back.
func (c *Config) validateAccounts() error {
	checks := []struct {
		ok       bool
		name     string
		val      any
		expected string
	}{
		{c.AccountMaxFailures >= 0 && c.AccountMaxFailures <= 1000, "DOORMAN_ACCOUNT_MAX_FAILURES", c.AccountMaxFailures, "must be from 0 (accounts off) to 1000"},
		{c.AccountFindTime > 0, "DOORMAN_ACCOUNT_FIND_TIME", c.AccountFindTime, "must be positive"},
		{c.AccountLockTime > 0, "DOORMAN_ACCOUNT_LOCK_TIME", c.AccountLockTime, "must be positive"},
		{c.AccountLockTime <= c.MaxBanTime, "DOORMAN_ACCOUNT_LOCK_TIME", c.AccountLockTime, "must be at most DOORMAN_MAX_BAN_TIME"},
		{c.MaxAccounts >= 1, "DOORMAN_MAX_ACCOUNTS", c.MaxAccounts, "must be at least 1"},
		{c.DeviceTTL >= time.Minute && c.DeviceTTL <= 87600*time.Hour, "DOORMAN_DEVICE_TTL", c.DeviceTTL, "must be from 1m to 87600h"},
		{c.DeviceMaxFailures >= 1 && c.DeviceMaxFailures <= 1000, "DOORMAN_DEVICE_MAX_FAILURES", c.DeviceMaxFailures, "must be from 1 to 1000"},
	}
	for _, k := range checks {
		if !k.ok {
			return &Error{Var: k.name, Value: fmt.Sprint(k.val), Problem: k.expected}
		}
	}
	if c.DeviceKey != "" && len(c.DeviceKey) < decide.DeviceKeyMin {
		return &Error{Var: "DOORMAN_DEVICE_KEY", Value: "(hidden)",
			Problem: fmt.Sprintf("is %d bytes, must be at least %d (e.g. head -c 32 /dev/urandom | base64)", len(c.DeviceKey), decide.DeviceKeyMin)}
	}
	if strings.ContainsAny(c.DeviceKey, " \t\r\n") {
		return &Error{Var: "DOORMAN_DEVICE_KEY", Value: "(hidden)", Problem: "must not contain white space"}
	}
	return nil
}

// AccountPolicy returns the account policy: locks escalate and are capped
// like bans (DOORMAN_BAN_FACTOR, DOORMAN_MAX_BAN_TIME).
func (c *Config) AccountPolicy() decide.AccountPolicy {
	return decide.AccountPolicy{MaxFailures: c.AccountMaxFailures, FindTime: c.AccountFindTime, LockTime: c.AccountLockTime,
		LockFactor: c.BanFactor, MaxLockTime: c.MaxBanTime, DeviceMaxFailures: c.DeviceMaxFailures}
}
