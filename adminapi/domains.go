package adminapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/accounting"
)

// parseDomain normalises a domain like a user and refuses anything that
// could not be the part after a user's '@'.
func parseDomain(raw string) (string, error) {
	d, err := normalizeName("domain", raw)
	if err != nil {
		return "", err
	}
	if strings.ContainsAny(d, "@/ \t") {
		return "", badRequest("domain %s is not a domain (no '@', '/' or spaces)", quote(raw))
	}
	return d, nil
}

// getDomain: GET /api/v1/domains/{domain} -> {"domain","enabled","dropped":0}.
func (s *Server) getDomain(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	d, err := parseDomain(r.PathValue("domain"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, DomainResult{Domain: d, Enabled: s.reg.DomainEnabled(d)})
	return nil
}

// setDomain: PUT /api/v1/domains/{domain} {"enabled":bool,"drop":bool} ->
// {"domain","enabled","dropped"}. Disabling drops the domain's live
// authenticated connections unless drop is false.
func (s *Server) setDomain(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	d, err := parseDomain(r.PathValue("domain"))
	if err != nil {
		return err
	}
	enabled, drop, bodyReason, err := decodeSetEnabled(w, r)
	if err != nil {
		return err
	}
	ch, err := s.begin(r, bodyReason)
	if err != nil {
		return err
	}
	e := accounting.AuditEntry{Action: "enable_domain", Target: d}
	if !enabled {
		e.Action, e.Params = "disable_domain", map[string]string{"drop": strconv.FormatBool(drop)}
	}
	n, err := s.reg.SetDomainEnabled(d, enabled, drop)
	if err != nil {
		e.Outcome = err.Error()
		s.record(ch, e)
		return err
	}
	res := DomainResult{Domain: d, Enabled: s.reg.DomainEnabled(d), Dropped: n}
	s.log.Info("admin api: set domain", "route", r.Pattern, "domain", d, "enabled", res.Enabled,
		"drop", drop, "dropped", n, "remote", r.RemoteAddr)
	e.OK, e.Dropped, e.Outcome = true, n, enabledText(res.Enabled, n)
	s.record(ch, e)
	writeJSON(w, http.StatusOK, res)
	return nil
}
