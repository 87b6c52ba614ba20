package adminapi_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/adminapi"
)

// TestReload: POST /api/v1/reload runs the reload and answers what changed;
// a refused configuration is 422 with the reason it gives; both are in the
// audit trail with the actor and the reason; without a reload hook it is
// 501.
func TestReload(t *testing.T) {
	calls := 0
	var next error
	e := newEnv(t, withRoles, func(o *adminapi.Options) {
		o.Reload = func() (adminapi.ReloadResult, error) {
			calls++
			if next != nil {
				return adminapi.ReloadResult{}, next
			}
			return adminapi.ReloadResult{Changed: []string{"listeners: +imaps2"}, Restart: []string{"state"}}, nil
		}
	})
	r := e.auditAs(adminToken, "new listener", "POST", "/api/v1/reload", "")
	var res adminapi.ReloadResult
	if r.status != http.StatusOK || json.Unmarshal(r.body, &res) != nil || len(res.Changed) != 1 || res.Restart[0] != "state" {
		t.Fatalf("reload = %d %s, want 200 with what changed", r.status, r.body)
	}
	next = errors.New("listeners[1].listen: \"localhost\" is not IP:port")
	r = e.auditAs(adminToken, "", "POST", "/api/v1/reload", "")
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(string(r.body), `"code":"reload_refused"`) || !strings.Contains(string(r.body), "listeners[1].listen") {
		t.Fatalf("refused reload = %d %s, want 422 reload_refused naming the key", r.status, r.body)
	}
	if r := e.auditAs(operatorToken, "", "POST", "/api/v1/reload", ""); r.status != http.StatusForbidden {
		t.Errorf("operator reload = %d, want 403", r.status)
	}
	if calls != 2 {
		t.Errorf("reload ran %d times, want 2 (never for the operator)", calls)
	}
	entries := e.auditList("?target=config")
	if len(entries) != 2 || entries[0].OK || !strings.Contains(entries[0].Outcome, "not IP:port") ||
		!entries[1].OK || entries[1].Actor != "ada" || entries[1].Reason != "new listener" || !strings.Contains(entries[1].Outcome, "+imaps2") {
		t.Errorf("audit = %+v, want the refused reload then the applied one, by ada with her reason", entries)
	}

	bare := newEnv(t)
	if r := bare.raw("POST", "/api/v1/reload", "", "Bearer "+testToken); r.status != http.StatusNotImplemented {
		t.Errorf("reload without a hook = %d, want 501", r.status)
	}
}
