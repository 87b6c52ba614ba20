package configs

import (
	"os"
	"strings"
	"testing"
	"time"
)

const minimal = `
admin:
  token: t
listeners:
  - name: imap
    protocol: imap
    listen: 127.0.0.1:1143
    backend:
      address: 127.0.0.1:143
`

func TestParseMinimalDefaults(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	l := c.Listeners[0]
	if l.TLS != "none" || l.Backend.ClientAddress != "none" || l.LoginTimeout.D() != 3*time.Minute || !*l.ProxyProtocol.Require {
		t.Errorf("defaults not applied: %+v", l)
	}
	if c.Limits.PerUserIP["imap"] != 20 {
		t.Errorf("per_user_ip.imap = %d, want 20", c.Limits.PerUserIP["imap"])
	}
	if c.Admin.Listen != "127.0.0.1:1880" {
		t.Errorf("admin.listen = %q", c.Admin.Listen)
	}
	if c.GCPercent != 50 {
		t.Errorf("gc_percent = %d, want 50", c.GCPercent)
	}
}

// TestAdminListenEmptyDisables: an explicit admin.listen: "" turns the admin
// API off (and so needs no token), an absent key takes the default
// (issue 20: SetDefaults used to turn "" into the default and then demand a
// token).
func TestAdminListenEmptyDisables(t *testing.T) {
	noToken := strings.Replace(minimal, "  token: t\n", "  listen: \"\"\n", 1)
	c, err := Parse([]byte(noToken))
	if err != nil {
		t.Fatalf("Parse(admin.listen: \"\", no token) = %v, want nil", err)
	}
	if c.Admin.Listen != "" {
		t.Errorf("admin.listen = %q, want \"\" (disabled)", c.Admin.Listen)
	}
	withoutAdmin := strings.Replace(minimal, "admin:\n  token: t\n", "", 1)
	if withoutAdmin == minimal {
		t.Fatal("the minimal config changed shape: fix this test")
	}
	if _, err := Parse([]byte(withoutAdmin)); err == nil || !strings.Contains(err.Error(), "token or token_file is required") {
		t.Errorf("Parse(no admin block) = %v, want the token error (the default listener needs one)", err)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top key", minimal + "bogus: 1\n", "line 10: unknown key bogus"},
		{"cluster ok", minimal + "cluster:\n  redis:\n    addresses: [\"127.0.0.1:6379\"]\n", ""},
		{"cluster without redis", minimal + "cluster:\n  heartbeat: 1s\n", "cluster.redis.addresses: at least one host:port is required"},
		{"cluster bad address", minimal + "cluster:\n  redis:\n    addresses: [redis]\n", `cluster.redis.addresses: "redis" is not host:port`},
		{"cluster on_redis_down", minimal + "cluster:\n  redis:\n    addresses: [\"r:6379\"]\n  on_redis_down: panic\n", `cluster.on_redis_down: "panic" is not one of last-known, refuse`},
		{"cluster ttl", minimal + "cluster:\n  redis:\n    addresses: [\"r:6379\"]\n  heartbeat: 2s\n  node_ttl: 3s\n", "cluster.node_ttl: 3s is less than two heartbeats (4s)"},
		{"cluster prefix", minimal + "cluster:\n  redis:\n    addresses: [\"r:6379\"]\n  prefix: \"a{b}\"\n", "may not contain spaces or braces"},
		{"cluster unknown key", minimal + "cluster:\n  redis:\n    adresses: [\"r:6379\"]\n", "unknown key adresses"},
		{"unknown nested key", strings.Replace(minimal, "    backend:", "    backnd: {}\n    backend:", 1), "unknown key backnd"},
		{"bad tls", strings.Replace(minimal, "listen: 127.0.0.1:1143", "listen: 127.0.0.1:1143\n    tls: maybe", 1), `tls: "maybe" is not one of none, starttls, implicit`},
		{"tls without certs", strings.Replace(minimal, "listen: 127.0.0.1:1143", "listen: 127.0.0.1:1143\n    tls: implicit", 1), "needs at least one entry in certificates"},
		{"bad duration", minimal + "shutdown_timeout: soon\n", `"soon" is not a duration`},
		{"no token", strings.Replace(minimal, "  token: t\n", "  listen: 127.0.0.1:1880\n", 1), "token or token_file is required"},
		{"bad listen", strings.Replace(minimal, "127.0.0.1:1143", "localhost", 1), `listen: "localhost" is not IP:port`},
		{"bad trusted", strings.Replace(minimal, "    backend:", "    proxy_protocol:\n      trusted: [nonsense]\n    backend:", 1), `"nonsense" is neither a CIDR nor an address`},
		{"no backend", strings.Replace(minimal, "      address: 127.0.0.1:143\n", "      tls: none\n", 1), "backend.address: required"},
		{"bad client_address", strings.Replace(minimal, "      address: 127.0.0.1:143\n", "      address: 127.0.0.1:143\n      client_address: xforward\n", 1), `client_address: "xforward" is not one of none, proxy-v2, imap-id`},
		{"valid client_address", strings.Replace(minimal, "      address: 127.0.0.1:143\n", "      address: 127.0.0.1:143\n      client_address: imap-id\n", 1), ""},
		{"unknown protocol", strings.Replace(minimal, "protocol: imap", "protocol: gopher", 1), `"gopher" is not supported`},
		{"smtp role", strings.Replace(minimal, "protocol: imap", "protocol: smtp\n    role: relay", 1), `role: "relay" is not one of mx, submission, submissions`},
		{"role on imap", strings.Replace(minimal, "protocol: imap", "protocol: imap\n    role: mx", 1), "only smtp listeners have a role"},
		{"xclient on imap", strings.Replace(minimal, "      address: 127.0.0.1:143\n", "      address: 127.0.0.1:143\n      client_address: xclient\n", 1), "xclient is only for smtp"},
		{"smtp ok", strings.Replace(strings.Replace(minimal, "protocol: imap", "protocol: smtp\n    role: mx", 1), "      address: 127.0.0.1:143\n", "      address: 127.0.0.1:25\n      client_address: xclient\n", 1), ""},
		{"no listeners", "admin:\n  token: t\n", "at least one listener"},
		{"bad gc_percent", minimal + "gc_percent: -5\n", "gc_percent: -1 (off) or a positive percentage"},
		{"gc off", minimal + "gc_percent: -1\n", ""},
		{"duplicate names", minimal + strings.SplitN(minimal, "listeners:\n", 2)[1], "duplicate name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml))
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Parse() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse() = %v, want error containing %q", err, tt.want)
			}
		})
	}
}

func TestExampleFileIsValid(t *testing.T) {
	b, err := os.ReadFile("mailgate.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// token_file must exist for AdminToken, not for Parse.
	c, err := Parse(b)
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(c.Listeners) != 2 {
		t.Errorf("example has %d listeners, want 2", len(c.Listeners))
	}
}

func TestAdminTokenFile(t *testing.T) {
	f := t.TempDir() + "/tok"
	os.WriteFile(f, []byte("  s3cret\n"), 0o600)
	c := &Config{Admin: Admin{TokenFile: f}}
	if tok, err := c.AdminToken(); err != nil || tok != "s3cret" {
		t.Fatalf("AdminToken() = %q, %v", tok, err)
	}
	os.WriteFile(f, []byte("\n"), 0o600)
	if _, err := c.AdminToken(); err == nil {
		t.Fatal("empty token file accepted")
	}
}
