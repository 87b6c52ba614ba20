package configs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const hashA = "8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92" // sha256("123456")

// withTokens is minimal with an admin block of named tokens instead of the
// single token.
func withTokens(tokens string) string {
	return strings.Replace(minimal, "admin:\n  token: t\n", "admin:\n  tokens:\n"+tokens, 1)
}

func TestAdminTokensValidate(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"good", withTokens("    - {name: ops, token_sha256: " + hashA + ", role: operator}\n    - {name: look, token_file: /x, role: viewer}\n"), ""},
		{"tokens and the single token", strings.Replace(minimal, "  token: t\n", "  token: t\n  tokens:\n    - {name: ops, token_file: /x, role: operator}\n", 1), ""},
		{"unknown role", withTokens("    - {name: ops, token_file: /x, role: root}\n"), `admin.tokens[0] (ops).role: "root" is not one of viewer, operator, admin`},
		{"no role", withTokens("    - {name: ops, token_file: /x}\n"), "role: required"},
		{"duplicate names", withTokens("    - {name: ops, token_file: /x, role: viewer}\n    - {name: ops, token_file: /y, role: admin}\n"), "admin.tokens[1] (ops).name: duplicate name"},
		{"admin taken by the single token", strings.Replace(minimal, "  token: t\n", "  token: t\n  tokens:\n    - {name: admin, token_file: /x, role: viewer}\n", 1), `"admin" is taken by admin.token`},
		{"admin free without the single token", withTokens("    - {name: admin, token_file: /x, role: admin}\n"), ""},
		{"both", withTokens("    - {name: ops, token_file: /x, token_sha256: " + hashA + ", role: viewer}\n"), "set token_file or token_sha256, not both"},
		{"empty", withTokens("    - {name: ops, role: viewer}\n"), "empty: set token_file or token_sha256"},
		{"no name", withTokens("    - {token_file: /x, role: viewer}\n"), "admin.tokens[0].name: required"},
		{"bad hash", withTokens("    - {name: ops, token_sha256: abc, role: viewer}\n"), "token_sha256: want 64 hex digits"},
		{"inline secret is not a key", withTokens("    - {name: ops, token: s, role: viewer}\n"), "unknown key token"},
		{"no token at all", strings.Replace(minimal, "  token: t\n", "  tokens: []\n", 1), "token or token_file is required"},
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

func TestAdminTokensRead(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "ops")
	os.WriteFile(f, []byte("ops-secret\n"), 0o600)
	c, err := Parse([]byte(strings.Replace(minimal, "  token: t\n", "  token: legacy\n  tokens:\n    - {name: ops, token_file: "+f+", role: operator}\n    - {name: look, token_sha256: "+strings.ToUpper(hashA)+", role: viewer}\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	ts, err := c.AdminTokens()
	if err != nil {
		t.Fatal(err)
	}
	want := []AdminTokenValue{
		{Name: "admin", Role: "admin", Secret: "legacy"},
		{Name: "ops", Role: "operator", Secret: "ops-secret"},
		{Name: "look", Role: "viewer", SHA256: hashA},
	}
	if len(ts) != len(want) {
		t.Fatalf("AdminTokens() = %+v", ts)
	}
	for i := range want {
		if ts[i] != want[i] {
			t.Errorf("token %d = %+v, want %+v", i, ts[i], want[i])
		}
	}
	os.WriteFile(f, []byte(" \n"), 0o600)
	if _, err := c.AdminTokens(); err == nil || !strings.Contains(err.Error(), "admin.tokens[0] (ops).token_file") {
		t.Errorf("AdminTokens() with a blank file = %v", err)
	}
	os.Remove(f)
	if _, err := c.AdminTokens(); err == nil {
		t.Error("AdminTokens() with a missing file = nil")
	}
}
