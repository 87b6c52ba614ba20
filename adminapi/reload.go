package adminapi

import (
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/accounting"
)

// ReloadResult is what POST /api/v1/reload answers: what the reload
// applied, and the keys that changed but wait for a restart.
type ReloadResult struct {
	Changed []string `json:"changed"`
	Restart []string `json:"restart"`
}

// ReloadFunc reads the configuration again and applies it, as SIGHUP does.
// An error means nothing changed; its text names the key.
type ReloadFunc func() (ReloadResult, error)

// reload: POST /api/v1/reload [{"reason":...}] -> ReloadResult; a refused
// configuration is 422 with the error shape, and nothing changed.
func (s *Server) reload(w http.ResponseWriter, r *http.Request) error {
	if s.reloadFn == nil {
		return apiErr(http.StatusNotImplemented, CodeNotImplemented, "this node cannot reload (no configuration file: the demo)")
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	res, err := s.reloadFn()
	if err != nil {
		s.record(ch, accounting.AuditEntry{Action: "reload", Target: "config", OK: false, Outcome: err.Error()})
		return apiErr(http.StatusUnprocessableEntity, CodeReloadRefused, "%s", err.Error())
	}
	if res.Changed == nil {
		res.Changed = []string{}
	}
	if res.Restart == nil {
		res.Restart = []string{}
	}
	outcome := "changed: " + strings.Join(res.Changed, ",")
	if len(res.Restart) > 0 {
		outcome += "; at the next restart: " + strings.Join(res.Restart, ",")
	}
	s.record(ch, accounting.AuditEntry{Action: "reload", Target: "config", OK: true, Outcome: outcome})
	writeJSON(w, http.StatusOK, res)
	return nil
}

// UpgradeResult is the body of POST /api/v1/upgrade: the new process took
// the listening sockets; this one drains.
type UpgradeResult struct {
	OldPID int    `json:"old_pid"`
	NewPID int    `json:"new_pid"`
	Binary string `json:"binary"`
	// DrainTimeout: the old process keeps its sessions until they end or
	// this long, then says goodbye over DrainSpread.
	DrainTimeout string `json:"drain_timeout"`
	DrainSpread  string `json:"drain_spread"`
}

// UpgradeFunc starts the binary again with the listening sockets and
// returns once the new process is ready; an error means this process goes
// on serving as before.
type UpgradeFunc func() (UpgradeResult, error)

// upgrade: POST /api/v1/upgrade [{"reason":...}] -> UpgradeResult, or 422
// when the new process did not come up (this one serves on).
func (s *Server) upgrade(w http.ResponseWriter, r *http.Request) error {
	if s.upgradeFn == nil {
		return apiErr(http.StatusNotImplemented, CodeNotImplemented, "this node cannot upgrade in place")
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	// Recorded before: once the new process is ready this one no longer
	// holds the state file. A failure is recorded again (the file is back).
	s.record(ch, accounting.AuditEntry{Action: "upgrade", Target: "binary", OK: true,
		Params: map[string]string{"pid": strconv.Itoa(os.Getpid())}, Outcome: "starting the binary again"})
	res, err := s.upgradeFn()
	if err != nil {
		s.record(ch, accounting.AuditEntry{Action: "upgrade", Target: "binary", OK: false, Outcome: err.Error()})
		return apiErr(http.StatusUnprocessableEntity, CodeUpgradeFailed, "%s", err.Error())
	}
	s.log.Info("admin api: upgrade", "old_pid", res.OldPID, "new_pid", res.NewPID, "binary", res.Binary, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
	return nil
}
