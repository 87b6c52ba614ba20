package adminapi

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/mailgate/mailgate/accounting"
)

// maxNameLen bounds a user or domain taken from a request.
const maxNameLen = 512

// parseUser normalises a user the way accounting does (trimmed, lowercased)
// and refuses blank, oversized or control-character names.
func parseUser(raw string) (string, error) {
	return normalizeName("user", raw)
}

// normalizeName checks raw before normalising it: strings.ToLower would
// turn invalid UTF-8 into U+FFFD and hide it.
func normalizeName(what, raw string) (string, error) {
	if !utf8.ValidString(raw) {
		return "", badRequest("%s %s is not valid UTF-8", what, quote(raw))
	}
	v := accounting.NormalizeUser(raw)
	switch {
	case v == "":
		return "", badRequest("%s is blank", what)
	case len(v) > maxNameLen:
		return "", badRequest("%s is over %d bytes", what, maxNameLen)
	case strings.ContainsFunc(v, unicode.IsControl):
		return "", badRequest("%s %s contains control characters", what, quote(raw))
	}
	return v, nil
}

// pathUser checks the query string of a /users/{user} request (only the
// parameters named in allowed may be there) and parses the {user} of its path.
func pathUser(r *http.Request, allowed ...string) (string, url.Values, error) {
	q, err := query(r, allowed...)
	if err != nil {
		return "", nil, err
	}
	user, err := parseUser(r.PathValue("user"))
	return user, q, err
}

// listUsers: GET /api/v1/users?protocol= -> the rows of a tab.
func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "protocol")
	if err != nil {
		return err
	}
	sel, err := parseSelector(q.Get("protocol"), true)
	if err != nil {
		return err
	}
	rs := rows(s.reg, sel)
	out := UserList{Protocol: sel.name, Users: make([]UserRow, 0, len(rs))}
	for _, row := range rs {
		out.Users = append(out.Users, toUserRow(row))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// userDetail: GET /api/v1/users/{user}. Any user has a detail: policy can
// be set before a first login.
func (s *Server) userDetail(w http.ResponseWriter, r *http.Request) error {
	user, _, err := pathUser(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toUserDetail(s.reg.User(user)))
	return nil
}

// userIPs: GET /api/v1/users/{user}/ips -> the authenticated-IP history.
func (s *Server) userIPs(w http.ResponseWriter, r *http.Request) error {
	user, _, err := pathUser(r)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, IPList{User: user, IPs: toIPRecords(s.reg.UserIPs(user))})
	return nil
}

// loginHistory is optional: with it, GET /api/v1/users/{user}/logins
// answers; *accounting.Registry has it.
type loginHistory interface {
	UserLogins(user string) []accounting.LoginAttempt
}

var _ loginHistory = (*accounting.Registry)(nil)

// userLogins: GET /api/v1/users/{user}/logins -> the last login attempts of
// the user over every protocol, newest first.
func (s *Server) userLogins(w http.ResponseWriter, r *http.Request) error {
	h, ok := s.reg.(loginHistory)
	if !ok {
		return apiErr(http.StatusNotImplemented, CodeNotImplemented, "this registry keeps no login history")
	}
	user, _, err := pathUser(r)
	if err != nil {
		return err
	}
	as := h.UserLogins(user)
	out := LoginList{User: user, Logins: make([]LoginAttemptJSON, 0, len(as))}
	for _, a := range as {
		out.Logins = append(out.Logins, LoginAttemptJSON{Time: mustTime(a.Time), First: mustTime(a.First), Count: a.Count,
			Protocol: a.Protocol, IP: a.IP, Mechanism: a.Mechanism, Result: a.Result, Reason: a.Reason})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// dropUser: POST /api/v1/users/{user}/drop?protocol= -> {"dropped":N}.
// No protocol, or "all", drops every protocol.
func (s *Server) dropUser(w http.ResponseWriter, r *http.Request) error {
	user, q, err := pathUser(r, "protocol")
	if err != nil {
		return err
	}
	sel, err := parseSelector(q.Get("protocol"), true)
	if err != nil {
		return err
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	res, err := s.dropSelected(user, sel)
	n := res.Dropped
	s.log.Info("admin api: drop user", "route", r.Pattern, "user", user, "protocol", sel.name,
		"dropped", n, "nodes", res.Nodes, "remote", r.RemoteAddr)
	e := accounting.AuditEntry{Action: "drop_user", Target: user, Params: map[string]string{"protocol": sel.name},
		OK: err == nil, Dropped: n, Outcome: droppedText(n)}
	if err != nil {
		e.Outcome += "; " + err.Error()
	}
	s.record(ch, e)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

// dropSelected drops user's live connections of the protocols sel selects
// and returns how many it dropped.
func (s *Server) dropSelected(user string, sel selector) (DropResult, error) {
	protos := sel.protos
	if sel.all() {
		protos = []string{tabAll}
	}
	var res DropResult
	na, cluster := s.reg.(nodeActions)
	for _, p := range protos {
		if !cluster {
			res.Dropped += s.reg.DropUser(user, p, dropReason)
			continue
		}
		cr, err := na.DropUserNodes(user, p, dropReason)
		res.Dropped += cr.Dropped
		if res.Nodes == nil {
			res.Nodes = map[string]int{}
		}
		for n, d := range cr.ByNode {
			res.Nodes[n] += d
		}
		res.Missing = cr.Missing
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// setProtocol: PUT /api/v1/users/{user}/protocols/{protocol}
// {"enabled":bool,"drop":bool} -> {"user","protocol","enabled","dropped"}.
// Disabling drops the live connections of the protocol unless drop is false.
// "mapi+ews" sets both; "all" is refused.
func (s *Server) setProtocol(w http.ResponseWriter, r *http.Request) error {
	user, _, err := pathUser(r)
	if err != nil {
		return err
	}
	sel, err := parseSelector(r.PathValue("protocol"), false)
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
	res := ProtocolResult{User: user, Protocol: sel.name, Enabled: true}
	e := protocolEntry(user, sel.name, enabled, drop)
	for _, p := range sel.protos {
		n, err := s.reg.SetProtocolEnabled(user, p, enabled, drop)
		res.Dropped += n
		if err != nil {
			e.Dropped, e.Outcome = res.Dropped, err.Error()
			s.record(ch, e)
			return err
		}
	}
	for _, p := range sel.protos {
		res.Enabled = res.Enabled && s.reg.ProtocolEnabled(user, p)
	}
	s.log.Info("admin api: set protocol", "route", r.Pattern, "user", user, "protocol", sel.name,
		"enabled", res.Enabled, "drop", drop, "dropped", res.Dropped, "remote", r.RemoteAddr)
	e.OK, e.Dropped = true, res.Dropped
	e.Outcome = enabledText(res.Enabled, res.Dropped)
	s.record(ch, e)
	writeJSON(w, http.StatusOK, res)
	return nil
}

// decodeSetEnabled reads a SetEnabledRequest: enabled is required, drop
// defaults to true.
func decodeSetEnabled(w http.ResponseWriter, r *http.Request) (enabled, drop bool, reason string, err error) {
	var req SetEnabledRequest
	if err := decodeBody(w, r, &req); err != nil {
		return false, false, "", err
	}
	if req.Enabled == nil {
		return false, false, "", badRequest(`body needs "enabled": true or false`)
	}
	drop = true
	if req.Drop != nil {
		drop = *req.Drop
	}
	return *req.Enabled, drop, req.Reason, nil
}

// protocolEntry starts the audit entry of a protocol switch for a user.
func protocolEntry(user, protocol string, enabled, drop bool) accounting.AuditEntry {
	e := accounting.AuditEntry{Action: "enable_protocol", Target: user, Params: map[string]string{"protocol": protocol}}
	if !enabled {
		e.Action = "disable_protocol"
		e.Params["drop"] = strconv.FormatBool(drop)
	}
	return e
}

// enabledText is the outcome of a switch.
func enabledText(enabled bool, dropped int) string {
	if enabled {
		return "enabled"
	}
	return "disabled, " + droppedText(dropped)
}
