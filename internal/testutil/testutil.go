// Package testutil holds what mailgate's tests share beyond one package:
// for now, waiting for a condition. Only tests import it.
package testutil

import (
	"testing"
	"time"
)

// WaitFor polls cond until it holds, failing the test after timeout with
// what and, when state is not nil, what state returns (the last thing
// seen, to say why).
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool, state func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	poll := min(max(timeout/500, time.Millisecond), 50*time.Millisecond)
	for !cond() {
		if time.Now().After(deadline) {
			msg := ""
			if state != nil {
				msg = ": " + state()
			}
			t.Fatalf("timed out after %v waiting for %s%s", timeout, what, msg)
		}
		time.Sleep(poll)
	}
}
