package adminapi

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// PolicyRegistry is what the resync, block, lockout and bulk routes need;
// *accounting.Registry implements it. When Options.Registry does not, those
// routes answer 501.
type PolicyRegistry interface {
	Resync(ctx context.Context, user, protocol string) ([]accounting.ResyncStep, error)
	Blocks() []accounting.Block
	AddBlock(prefix netip.Prefix, reason string, expires time.Time) (int, error)
	RemoveBlock(prefix netip.Prefix) (bool, error)
	Lockouts() []accounting.Lockout
	ClearLockout(kind, key string) bool
	Stats() accounting.Stats
}

var _ PolicyRegistry = (*accounting.Registry)(nil)

func (s *Server) policy() (PolicyRegistry, error) {
	p, ok := s.reg.(PolicyRegistry)
	if !ok {
		return nil, apiErr(http.StatusNotImplemented, CodeNotImplemented, "this registry has no policy store")
	}
	return p, nil
}

// ResyncStep is one step's outcome.
type ResyncStep struct {
	Step    string `json:"step"`
	OK      bool   `json:"ok"`
	Detail  string `json:"detail"`
	dropped int    // the drop step's count, for the audit trail
}

// ResyncResult answers POST /api/v1/users/{user}/resync.
type ResyncResult struct {
	User     string       `json:"user"`
	Protocol string       `json:"protocol"`
	Steps    []ResyncStep `json:"steps"`
}

// resync: POST /api/v1/users/{user}/resync?protocol=imap (required: a
// resync is about one protocol's devices; mapi+ews runs both).
func (s *Server) resync(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	user, q, err := pathUser(r, "protocol")
	if err != nil {
		return err
	}
	sel, err := parseSelector(q.Get("protocol"), false)
	if err != nil {
		return err
	}
	bodyReason, err := decodeReason(w, r)
	if err != nil {
		return err
	}
	if !accounting.ValidHookUser(user) {
		return badUserForHook(user)
	}
	ch, err := s.begin(r, bodyReason)
	if err != nil {
		return err
	}
	res, err := s.resyncOne(r.Context(), p, user, sel)
	s.record(ch, resyncEntry(user, sel.name, res, err))
	if err != nil {
		return err
	}
	s.log.Info("admin api: resync", "route", r.Pattern, "user", user, "protocol", sel.name, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, res)
	return nil
}

func badUserForHook(user string) error {
	return badRequest("user %s cannot be passed to a resync hook (letters, digits, . _ %% + = - and one @ only)", quote(user))
}

// resyncEntry is the audit entry of a resync: the steps' details are its
// outcome, the drop step's count its dropped sessions.
func resyncEntry(user, protocol string, res ResyncResult, err error) accounting.AuditEntry {
	e := accounting.AuditEntry{Action: "resync", Target: user, Params: map[string]string{"protocol": protocol}, OK: err == nil}
	var parts []string
	for _, st := range res.Steps {
		e.OK = e.OK && st.OK
		e.Dropped += st.dropped
		parts = append(parts, st.Step+": "+st.Detail)
	}
	if err != nil {
		parts = append(parts, err.Error())
	}
	e.Outcome = strings.Join(parts, "; ")
	return e
}

func (s *Server) resyncOne(ctx context.Context, p PolicyRegistry, user string, sel selector) (ResyncResult, error) {
	res := ResyncResult{User: user, Protocol: sel.name, Steps: []ResyncStep{}}
	for _, proto := range sel.protos {
		steps, err := p.Resync(ctx, user, proto)
		if errors.Is(err, accounting.ErrBadUser) {
			return res, badUserForHook(user)
		}
		if err != nil {
			return res, err
		}
		for _, st := range steps {
			rs := ResyncStep{Step: st.Step, OK: st.OK, Detail: st.Detail}
			if st.Step == "drop" {
				rs.dropped = st.Count
			}
			res.Steps = append(res.Steps, rs)
		}
	}
	return res, nil
}

// BlockJSON is one IP block.
type BlockJSON struct {
	Network string     `json:"network"`
	Reason  string     `json:"reason"`
	Created time.Time  `json:"created"`
	Expires *time.Time `json:"expires"` // null: until removed
}

// BlockRequest is the body of POST /api/v1/blocks. Expires (RFC 3339) or
// Duration ("1h") bounds the block; neither means until removed.
type BlockRequest struct {
	Network  string `json:"network"`
	Reason   string `json:"reason"`
	Expires  string `json:"expires"`
	Duration string `json:"duration"`
}

func toBlock(b accounting.Block) BlockJSON {
	return BlockJSON{Network: b.Prefix.String(), Reason: b.Reason, Created: mustTime(b.Created), Expires: wireTime(b.Expires)}
}

// parseNetwork accepts an address or a CIDR.
func parseNetwork(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, badRequest("network %s is neither an IP address nor a CIDR", quote(s))
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

func (s *Server) listBlocks(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	out := []BlockJSON{}
	for _, b := range p.Blocks() {
		out = append(out, toBlock(b))
	}
	writeJSON(w, http.StatusOK, map[string]any{"blocks": out})
	return nil
}

func (s *Server) addBlock(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	var req BlockRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	pfx, err := parseNetwork(req.Network)
	if err != nil {
		return err
	}
	var expires time.Time
	switch {
	case req.Expires != "" && req.Duration != "":
		return badRequest("give expires or duration, not both")
	case req.Expires != "":
		if expires, err = time.Parse(time.RFC3339, req.Expires); err != nil {
			return badRequest("expires %s is not RFC 3339", quote(req.Expires))
		}
	case req.Duration != "":
		d, err := time.ParseDuration(req.Duration)
		if err != nil || d <= 0 {
			return badRequest("duration %s is not a positive duration such as 1h", quote(req.Duration))
		}
		expires = time.Now().Add(d)
	}
	if len(req.Reason) > 512 {
		return badRequest("reason is over 512 bytes")
	}
	// The block's reason is the change's reason, unless the header gives one.
	ch, err := s.begin(r, req.Reason)
	if err != nil {
		return err
	}
	e := accounting.AuditEntry{Action: "block", Target: pfx.String(), Params: map[string]string{"expires": "never"}}
	if !expires.IsZero() {
		e.Params["expires"] = mustTime(expires).Format(time.RFC3339)
	}
	if req.Reason != "" && strings.TrimSpace(req.Reason) != ch.reason {
		e.Params["block_reason"] = req.Reason
	}
	n, err := p.AddBlock(pfx, req.Reason, expires)
	if err != nil {
		e.Outcome = err.Error()
		s.record(ch, e)
		return err
	}
	s.log.Info("admin api: block", "network", pfx.String(), "expires", expires, "dropped", n, "remote", r.RemoteAddr)
	e.OK, e.Dropped, e.Outcome = true, n, "blocked, "+droppedText(n)
	s.record(ch, e)
	var block BlockJSON
	for _, b := range p.Blocks() {
		if b.Prefix == pfx {
			block = toBlock(b)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"block": block, "dropped": n})
	return nil
}

func (s *Server) removeBlock(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	q, err := query(r, "network")
	if err != nil {
		return err
	}
	pfx, err := parseNetwork(q.Get("network"))
	if err != nil {
		return err
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	ok, err := p.RemoveBlock(pfx)
	e := accounting.AuditEntry{Action: "unblock", Target: pfx.String(), OK: ok && err == nil, Outcome: "removed"}
	switch {
	case err != nil:
		e.Outcome = err.Error()
	case !ok:
		e.Outcome = "no block for " + pfx.String()
	}
	s.record(ch, e)
	if err != nil {
		return err
	}
	if !ok {
		return notFound("no block for %s", pfx)
	}
	s.log.Info("admin api: unblock", "network", pfx.String(), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"removed": pfx.String()})
	return nil
}

// LockoutJSON is one brute-force lockout.
type LockoutJSON struct {
	Kind     string    `json:"kind"` // ip or user
	Key      string    `json:"key"`
	Failures int       `json:"failures"`
	Until    time.Time `json:"until"`
}

func (s *Server) listLockouts(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	out := []LockoutJSON{}
	for _, l := range p.Lockouts() {
		out = append(out, LockoutJSON{Kind: l.Kind, Key: l.Key, Failures: l.Failures, Until: mustTime(l.Until)})
	}
	writeJSON(w, http.StatusOK, map[string]any{"lockouts": out})
	return nil
}

// clearLockout: DELETE /api/v1/lockouts?kind=ip|user&key=...
func (s *Server) clearLockout(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	q, err := query(r, "kind", "key")
	if err != nil {
		return err
	}
	kind, key := q.Get("kind"), q.Get("key")
	if kind != "ip" && kind != "user" {
		return badRequest("kind must be ip or user")
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	target := key
	if kind == "user" {
		target = accounting.NormalizeUser(key)
	}
	cleared := p.ClearLockout(kind, key)
	e := accounting.AuditEntry{Action: "clear_lockout", Target: target, Params: map[string]string{"kind": kind}, OK: cleared, Outcome: "cleared"}
	if !cleared {
		e.Outcome = "no lockout state"
	}
	s.record(ch, e)
	if !cleared {
		return notFound("no lockout state for %s %s", kind, quote(key))
	}
	s.log.Info("admin api: clear lockout", "kind", kind, "key", key, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"cleared": map[string]string{"kind": kind, "key": key}})
	return nil
}

// BulkRequest is the body of POST /api/v1/bulk: one action for several
// selected users, as the page's multi-select does.
type BulkRequest struct {
	Users    []string `json:"users"`
	Action   string   `json:"action"`   // drop, resync, enable, disable
	Protocol string   `json:"protocol"` // all (drop only), a key, mapi+ews
	Drop     *bool    `json:"drop"`     // disable: drop live sessions (default true)
	Reason   string   `json:"reason"`   // for the audit trail
}

// BulkItem is one user's outcome.
type BulkItem struct {
	User    string       `json:"user"`
	OK      bool         `json:"ok"`
	Dropped int          `json:"dropped"`
	Steps   []ResyncStep `json:"steps,omitempty"`
	Error   string       `json:"error,omitempty"`
}

const maxBulkUsers = 1000

func (s *Server) bulk(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req BulkRequest
	if err := decodeBody(w, r, &req); err != nil {
		return err
	}
	if len(req.Users) == 0 || len(req.Users) > maxBulkUsers {
		return badRequest("users must list 1 to %d users", maxBulkUsers)
	}
	sel, err := parseSelector(req.Protocol, req.Action == "drop")
	if err != nil {
		return err
	}
	drop := req.Drop == nil || *req.Drop
	var p PolicyRegistry
	switch req.Action {
	case "drop", "enable", "disable":
	case "resync":
		if p, err = s.policy(); err != nil {
			return err
		}
	default:
		return badRequest("action must be drop, resync, enable or disable")
	}
	users := make([]string, len(req.Users))
	for i, raw := range req.Users {
		if users[i], err = parseUser(raw); err != nil {
			return err
		}
	}
	ch, err := s.begin(r, req.Reason)
	if err != nil {
		return err
	}
	items := make([]BulkItem, 0, len(users))
	// One audit entry per user, as the single routes write them, marked
	// as part of a bulk of so many users; all in one commit.
	entries := make([]accounting.AuditEntry, 0, len(users))
	bulkOf := strconv.Itoa(len(users))
	for _, u := range users {
		it := BulkItem{User: u, OK: true}
		var e accounting.AuditEntry
		switch req.Action {
		case "drop":
			res, err := s.dropSelected(u, sel)
			it.Dropped = res.Dropped
			e = accounting.AuditEntry{Action: "drop_user", Target: u, Params: map[string]string{"protocol": sel.name},
				OK: err == nil, Dropped: it.Dropped, Outcome: droppedText(it.Dropped)}
			if err != nil {
				it.OK, it.Error = false, err.Error()
			}
		case "enable", "disable":
			e = protocolEntry(u, sel.name, req.Action == "enable", drop)
			for _, pr := range sel.protos {
				n, err := s.reg.SetProtocolEnabled(u, pr, req.Action == "enable", drop)
				it.Dropped += n
				if err != nil {
					it.OK, it.Error = false, err.Error()
					break
				}
			}
			e.OK, e.Dropped, e.Outcome = it.OK, it.Dropped, enabledText(req.Action == "enable", it.Dropped)
			if !it.OK {
				e.Outcome = it.Error
			}
		case "resync":
			res, err := s.resyncOne(r.Context(), p, u, sel)
			if err != nil {
				it.OK, it.Error = false, err.Error()
			}
			it.Steps = res.Steps
			for _, st := range res.Steps {
				it.OK = it.OK && st.OK
			}
			e = resyncEntry(u, sel.name, res, err)
		}
		e.Params["bulk"] = bulkOf
		entries = append(entries, e)
		items = append(items, it)
	}
	s.record(ch, entries...)
	s.log.Info("admin api: bulk", "action", req.Action, "protocol", sel.name, "users", len(users), "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, map[string]any{"action": req.Action, "protocol": sel.name, "results": items})
	return nil
}

// StatsJSON is the body of GET /api/v1/stats: counters since start.
type StatsJSON struct {
	Refusals      map[string]int64            `json:"refusals"` // by reason
	Logins        map[string]map[string]int64 `json:"logins"`   // protocol -> success|failure|temporary_failure
	Drops         int64                       `json:"drops"`
	Authenticated map[string]int64            `json:"authenticated"` // live authenticated connections per protocol
	DialErrors    map[string]int64            `json:"backend_dial_errors"`
	BytesUp       map[string]int64            `json:"relay_bytes_up"`
	BytesDown     map[string]int64            `json:"relay_bytes_down"`
}

func (s *Server) stats(w http.ResponseWriter, r *http.Request) error {
	p, err := s.policy()
	if err != nil {
		return err
	}
	if _, err := query(r); err != nil {
		return err
	}
	st := p.Stats()
	writeJSON(w, http.StatusOK, StatsJSON{Refusals: st.Refusals, Logins: st.Logins, Drops: st.Drops,
		Authenticated: st.Authenticated, DialErrors: st.DialErrors, BytesUp: st.BytesUp, BytesDown: st.BytesDown})
	return nil
}
