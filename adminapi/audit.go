package adminapi

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/mailgate/mailgate/accounting"
)

// The audit trail of the API's changes. Every route that changes something
// (drops, resyncs, protocol and domain switches, blocks, lockouts, bulk)
// records what it did, who asked (the token's name and role), from where
// (the admin client's address) and why (the reason), with the outcome, in
// the AuditTrail before it answers, and logs the same as one line with the
// message "audit". A GET is never recorded, nor a request refused before it
// acted (401, 403, a 400 for its input).

// AuditTrail keeps the entries; *accounting.AuditLog implements it.
type AuditTrail interface {
	Record(entries ...accounting.AuditEntry) ([]accounting.AuditEntry, error)
	Query(accounting.AuditFilter) ([]accounting.AuditEntry, error)
}

var _ AuditTrail = (*accounting.AuditLog)(nil)

// ReasonHeader carries the reason for a change; a JSON body's "reason" is
// the other way to give it.
const ReasonHeader = "X-Mailgate-Reason"

// maxReasonLen bounds a reason.
const maxReasonLen = 512

// maxOutcomeLen bounds an entry's outcome (a resync hook's output is in it).
const maxOutcomeLen = 1000

// change is an admin change under way: who, from where and why.
type change struct {
	actor, role, source, reason string
}

// beginChange reads a change's optional {"reason":...} body and starts it
// (begin): the start of every route without a body of its own.
func (s *Server) beginChange(w http.ResponseWriter, r *http.Request) (change, error) {
	bodyReason, err := decodeReason(w, r)
	if err != nil {
		return change{}, err
	}
	return s.begin(r, bodyReason)
}

// begin reads the reason of a change, from the header or else bodyReason,
// and refuses the change without one when reasons are required. It runs
// before the change does.
func (s *Server) begin(r *http.Request, bodyReason string) (change, error) {
	reason := strings.TrimSpace(r.Header.Get(ReasonHeader))
	if reason == "" {
		reason = strings.TrimSpace(bodyReason)
	}
	switch {
	case len(reason) > maxReasonLen:
		return change{}, badRequest("reason is over %d bytes", maxReasonLen)
	case !utf8.ValidString(reason):
		return change{}, badRequest("reason is not valid UTF-8")
	case strings.ContainsFunc(reason, unicode.IsControl):
		return change{}, badRequest("reason contains control characters")
	case reason == "" && s.requireReason.Load():
		s.log.Info("admin api: change refused without a reason", "route", r.Pattern, "actor", caller(r).name, "remote", r.RemoteAddr)
		return change{}, badRequest("a reason is required: send it in the %s header or as \"reason\" in the JSON body", ReasonHeader)
	}
	p := caller(r)
	c := change{actor: p.name, role: p.role, reason: reason, source: r.RemoteAddr}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		c.source = host
	}
	return c, nil
}

// record writes the entries of a change to the trail and to the log. A
// trail that cannot be written is logged as an error; the change is made
// by then, so the answer still tells what it did.
func (s *Server) record(c change, entries ...accounting.AuditEntry) {
	for i := range entries {
		e := &entries[i]
		e.Actor, e.Role, e.Source, e.Reason = c.actor, c.role, c.source, c.reason
		if len(e.Outcome) > maxOutcomeLen {
			e.Outcome = clip(e.Outcome, maxOutcomeLen)
		}
	}
	recorded, err := s.audit.Record(entries...)
	if err != nil {
		s.log.Error("audit: the trail could not be written; the entries are in the log only", "err", err, "entries", len(entries))
		recorded = entries
	}
	for _, e := range recorded {
		attrs := []any{"id", e.ID, "actor", e.Actor, "role", e.Role, "source", e.Source, "action", e.Action,
			"target", e.Target, "reason", e.Reason, "ok", e.OK, "dropped", e.Dropped, "outcome", e.Outcome}
		if len(e.Params) > 0 {
			keys := make([]string, 0, len(e.Params))
			for k := range e.Params {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			ps := make([]any, 0, len(keys))
			for _, k := range keys {
				ps = append(ps, slog.String(k, e.Params[k]))
			}
			attrs = append(attrs, slog.Group("params", ps...))
		}
		s.log.Info("audit", attrs...)
	}
}

// clip cuts s to at most n bytes on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n - 3
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "..."
}

// decodeReason reads the optional body of a change that takes no other
// input: nothing, or {"reason": "..."}.
func decodeReason(w http.ResponseWriter, r *http.Request) (string, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		return "", bodyError(err)
	}
	if len(bytes.TrimSpace(b)) == 0 {
		return "", nil
	}
	var req ReasonRequest
	r.Body = io.NopCloser(bytes.NewReader(b))
	if err := decodeBody(w, r, &req); err != nil {
		return "", err
	}
	return req.Reason, nil
}

// ReasonRequest is the optional body of the changes that take no other
// input (the drops, resync, unblock, clearing a lockout).
type ReasonRequest struct {
	Reason string `json:"reason"`
}

// AuditJSON is one entry of GET /api/v1/audit.
type AuditJSON struct {
	ID      uint64            `json:"id"`
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`
	Role    string            `json:"role"`
	Source  string            `json:"source"`
	Action  string            `json:"action"`
	Target  string            `json:"target"`
	Params  map[string]string `json:"params"`
	Reason  string            `json:"reason"`
	OK      bool              `json:"ok"`
	Dropped int               `json:"dropped"`
	Outcome string            `json:"outcome"`
	Node    string            `json:"node,omitempty"` // in a cluster: the node the change was made through
}

// AuditList is the body of GET /api/v1/audit, newest first.
type AuditList struct {
	Entries []AuditJSON `json:"entries"`
}

// maxAuditLimit bounds GET /api/v1/audit?limit=.
const maxAuditLimit = accounting.DefaultAuditKeep

// listAudit: GET /api/v1/audit?actor=&target=&since=&limit=. since is a
// time (RFC 3339) or a duration back from now ("24h"); limit is 1 to 10000
// (default 100).
func (s *Server) listAudit(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "actor", "target", "since", "limit")
	if err != nil {
		return err
	}
	f := accounting.AuditFilter{Actor: strings.TrimSpace(q.Get("actor")), Limit: 100}
	if t := q.Get("target"); strings.TrimSpace(t) != "" {
		f.Target = accounting.NormalizeUser(t)
	}
	if v := q.Get("since"); v != "" {
		if f.Since, err = parseSince(v, time.Now()); err != nil {
			return err
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return badRequest("limit must be 1 to %d", maxAuditLimit)
		}
		f.Limit = n
	}
	entries, err := s.audit.Query(f)
	if err != nil {
		return err
	}
	out := AuditList{Entries: make([]AuditJSON, 0, len(entries))}
	for _, e := range entries {
		params := e.Params
		if params == nil {
			params = map[string]string{}
		}
		out.Entries = append(out.Entries, AuditJSON{ID: e.ID, Time: mustTime(e.Time), Actor: e.Actor, Role: e.Role,
			Source: e.Source, Action: e.Action, Target: e.Target, Params: params, Reason: e.Reason, OK: e.OK,
			Dropped: e.Dropped, Outcome: e.Outcome, Node: e.Node})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseSince takes an RFC 3339 time or a positive duration before now.
func parseSince(v string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return time.Time{}, badRequest("since %s is neither an RFC 3339 time nor a duration such as 24h", quote(v))
	}
	return now.Add(-d), nil
}

// droppedText is an outcome for n dropped sessions.
func droppedText(n int) string {
	return "dropped " + strconv.Itoa(n) + " session(s)"
}
