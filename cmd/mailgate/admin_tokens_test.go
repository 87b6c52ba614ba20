package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adminapi"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// tokenRig is a mailgate whose admin block has named tokens: the legacy
// token_file ("admin"), an operator's token_file and a viewer's hash.
type tokenRig struct {
	t                 *testing.T
	dir, path         string
	legacy, ops, hash string // the files and the viewer's token
	a                 *app
	admin             string
	logs              *protocoltest.SyncBuffer
}

func (r *tokenRig) writeConfig(extra string) {
	r.t.Helper()
	sum := sha256.Sum256([]byte("viewer-token"))
	y := fmt.Sprintf(`node: tokens
admin:
  listen: 127.0.0.1:0
  token_file: %s
  tokens:
    - name: ops
      token_file: %s
      role: operator
    - name: look
      token_sha256: %s
      role: viewer
%slisteners:
  - name: imap
    protocol: imap
    listen: 127.0.0.1:0
    backend:
      address: 127.0.0.1:1
`, r.legacy, r.ops, hex.EncodeToString(sum[:]), extra)
	if err := os.WriteFile(r.path, []byte(y), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func newTokenRig(t *testing.T) *tokenRig {
	dir := t.TempDir()
	r := &tokenRig{t: t, dir: dir, path: filepath.Join(dir, "mailgate.yaml"),
		legacy: filepath.Join(dir, "admin-token"), ops: filepath.Join(dir, "ops-token"), logs: &protocoltest.SyncBuffer{}}
	os.WriteFile(r.legacy, []byte("admin-token-1\n"), 0o600)
	os.WriteFile(r.ops, []byte("ops-token-1\n"), 0o600)
	r.writeConfig("")
	a := startFile(t, r.path, r.logs)
	r.a = a
	for _, b := range a.bound {
		if b.name == "admin" {
			r.admin = b.addr
		}
	}
	return r
}

// who asks GET /api/v1/whoami with token: the status and, on 200, the
// name and role.
func (r *tokenRig) who(token string) (int, string) {
	r.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.admin+"/api/v1/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	var w adminapi.Whoami
	json.NewDecoder(resp.Body).Decode(&w)
	return resp.StatusCode, w.Name + "/" + w.Role
}

func (r *tokenRig) wantWho(when, token string, status int, who string) {
	r.t.Helper()
	st, got := r.who(token)
	if st != status || (status == http.StatusOK && got != who) {
		r.t.Errorf("%s: whoami with %q = %d %s, want %d %s", when, token, st, got, status, who)
	}
}

func TestReloadRotatesTheTokenSet(t *testing.T) {
	r := newTokenRig(t)
	r.wantWho("at start", "admin-token-1", 200, "admin/admin")
	r.wantWho("at start", "ops-token-1", 200, "ops/operator")
	r.wantWho("at start", "viewer-token", 200, "look/viewer")

	// Both files rotate; the viewer's entry goes away.
	os.WriteFile(r.legacy, []byte("admin-token-2\n"), 0o600)
	os.WriteFile(r.ops, []byte("ops-token-2\n"), 0o600)
	y, _ := os.ReadFile(r.path)
	i := strings.Index(string(y), "    - name: look")
	j := strings.Index(string(y), "listeners:")
	os.WriteFile(r.path, append(y[:i:i], y[j:]...), 0o600)
	if _, err := r.a.reload(r.path); err != nil {
		t.Fatal(err)
	}
	r.wantWho("after the rotation", "admin-token-1", 401, "")
	r.wantWho("after the rotation", "ops-token-1", 401, "")
	r.wantWho("after the rotation", "viewer-token", 401, "")
	r.wantWho("after the rotation", "admin-token-2", 200, "admin/admin")
	r.wantWho("after the rotation", "ops-token-2", 200, "ops/operator")

	// A token file that went blank, or two names for one secret, change
	// nothing: the running set stays whole.
	os.WriteFile(r.ops, []byte("\n"), 0o600)
	if _, err := r.a.reload(r.path); err == nil || !strings.Contains(err.Error(), "token_file") {
		t.Fatalf("reload with a blank token file = %v", err)
	}
	os.WriteFile(r.ops, []byte("admin-token-2\n"), 0o600)
	if _, err := r.a.reload(r.path); err == nil || !strings.Contains(err.Error(), "same secret") {
		t.Fatalf("reload with one secret under two names = %v", err)
	}
	r.wantWho("after failed reloads", "admin-token-2", 200, "admin/admin")
	r.wantWho("after failed reloads", "ops-token-2", 200, "ops/operator")
	for _, secret := range []string{"admin-token-1", "admin-token-2", "ops-token-1", "ops-token-2", "viewer-token"} {
		if strings.Contains(r.logs.String(), secret) {
			t.Errorf("the log holds the token %q:\n%s", secret, r.logs.String())
		}
	}
}

func TestCheckReadsTheTokenFiles(t *testing.T) {
	r := newTokenRig(t)
	if err := cmdCheck([]string{"-config", r.path}); err != nil {
		t.Fatalf("check of a good config = %v", err)
	}
	os.WriteFile(r.ops, []byte("admin-token-1\n"), 0o600)
	if err := cmdCheck([]string{"-config", r.path}); err == nil || !strings.Contains(err.Error(), "same secret") {
		t.Errorf("check with one secret under two names = %v", err)
	}
	os.Remove(r.ops)
	if err := cmdCheck([]string{"-config", r.path}); err == nil || !strings.Contains(err.Error(), "admin.tokens[0] (ops).token_file") {
		t.Errorf("check with a missing token file = %v", err)
	}
}
