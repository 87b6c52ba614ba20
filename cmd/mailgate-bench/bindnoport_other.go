//go:build !linux

package main

import "syscall"

// bindNoPort: IP_BIND_ADDRESS_NO_PORT is Linux's. Elsewhere a bound source
// address reserves its port at bind time, so a run with many source
// addresses may exhaust ports sooner.
func bindNoPort(_, _ string, _ syscall.RawConn) error { return nil }
