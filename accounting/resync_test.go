package accounting_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/accounting"
)

func TestResyncCommandHookArgvWithoutShell(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "argv")
	// The hook records its argv one per line; a shell would have split or
	// expanded them.
	script := filepath.Join(dir, "hook.sh")
	os.WriteFile(script, []byte("#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done > "+out+"\necho resynced\n"), 0o755)
	r := accounting.New(accounting.Options{ResyncHooks: map[string]accounting.ResyncHook{
		"imap": {Command: []string{script, "-u", "{user}", "INBOX", "proto={protocol}"}},
	}})
	c := r.Register(accounting.ConnInfo{Protocol: "imap", Client: ap("192.0.2.1:1")})
	c.Authenticated("alice@example.com", "LOGIN")
	dropped := false
	c.SetDropFunc(func(string) { dropped = true })
	steps, err := r.Resync(context.Background(), "Alice@Example.com", "imap")
	if err != nil {
		t.Fatal(err)
	}
	if len(steps) != 3 || !steps[0].OK || steps[0].Detail != "dropped 1 session(s)" || !steps[2].OK || !strings.Contains(steps[2].Detail, "resynced") {
		t.Fatalf("steps = %+v", steps)
	}
	if !dropped || r.Count("imap") != 0 {
		t.Fatal("resync did not drop the session")
	}
	got, _ := os.ReadFile(out)
	if string(got) != "-u\nalice@example.com\nINBOX\nproto=imap\n" {
		t.Fatalf("argv = %q", got)
	}
}

func TestResyncRefusesInjection(t *testing.T) {
	r := accounting.New(accounting.Options{ResyncHooks: map[string]accounting.ResyncHook{
		"imap": {Command: []string{"/bin/true", "{user}"}},
	}})
	for _, u := range []string{"alice; rm -rf /", "-oProxyCommand=x", "a b@example.com", "$(id)@x", "`id`", "a\nb", ""} {
		if _, err := r.Resync(context.Background(), u, "imap"); err != accounting.ErrBadUser {
			t.Errorf("Resync(%q) = %v, want ErrBadUser", u, err)
		}
	}
}

func TestResyncWebhookAndFailure(t *testing.T) {
	var got map[string]string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewDecoder(r.Body).Decode(&got)
		if got["protocol"] == "pop" {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()
	r := accounting.New(accounting.Options{ResyncHooks: map[string]accounting.ResyncHook{
		"eas": {URL: srv.URL}, "pop": {URL: srv.URL},
	}})
	steps, err := r.Resync(context.Background(), "bob@example.com", "eas")
	if err != nil || !steps[2].OK {
		t.Fatalf("steps = %+v, %v", steps, err)
	}
	if got["user"] != "bob@example.com" || got["protocol"] != "eas" {
		t.Fatalf("webhook got %v", got)
	}
	steps, _ = r.Resync(context.Background(), "bob@example.com", "pop")
	if steps[2].OK || !strings.Contains(steps[2].Detail, "500") {
		t.Fatalf("failed webhook reported as %+v", steps[2])
	}
	steps, _ = r.Resync(context.Background(), "bob@example.com", "smtp")
	if !steps[2].OK || !strings.Contains(steps[2].Detail, "no hook") {
		t.Fatalf("no-hook step = %+v", steps[2])
	}
}
