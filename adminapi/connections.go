package adminapi

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/accounting"
)

// dropReason is what the proxy's drop function gets for an admin drop.
const dropReason = "admin"

// summary: GET /api/v1/connections/summary -> {"all":N,"smtp":N,...}.
func (s *Server) summary(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	sum := s.reg.Summary()
	out := make(map[string]int, len(accounting.Protocols)+1)
	out[tabAll] = sum[tabAll]
	for _, p := range accounting.Protocols {
		out[p] = sum[p] // every key present, 0 when missing
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// listConnections: GET /api/v1/connections?protocol=&user=&ip=.
func (s *Server) listConnections(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "protocol", "user", "ip", "node")
	if err != nil {
		return err
	}
	sel, err := parseSelector(q.Get("protocol"), true)
	if err != nil {
		return err
	}
	var f accounting.Filter
	if u := q.Get("user"); strings.TrimSpace(u) != "" {
		if f.User, err = parseUser(u); err != nil {
			return err
		}
	}
	if v := q.Get("ip"); v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			return badRequest("invalid ip %s", quote(v))
		}
		f.IP = ip
	}
	f.Node = strings.TrimSpace(q.Get("node"))
	infos := connections(s.reg, sel, f)
	out := ConnectionList{Connections: make([]Connection, 0, len(infos))}
	for _, i := range infos {
		if i.Node == "" {
			i.Node = s.node
		}
		out.Connections = append(out.Connections, toConnection(i))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// dropConnection: DELETE /api/v1/connections/{id} -> {"dropped":1} or 404.
// The optional body is {"reason": "..."}.
func (s *Server) dropConnection(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	raw := r.PathValue("id")
	id, err := strconv.ParseUint(raw, 10, 64)
	if err != nil {
		return badRequest("invalid connection id %s: want a decimal number", quote(raw))
	}
	ch, err := s.beginChange(w, r)
	if err != nil {
		return err
	}
	var info accounting.Info
	if g, ok := s.reg.(connGetter); ok {
		if c := g.Get(id); c != nil {
			info = c.Info()
		}
	}
	var res DropResult
	var dropped bool
	if na, ok := s.reg.(nodeActions); ok {
		cr, err := na.DropConnNodes(id, dropReason)
		if err != nil {
			return err
		}
		dropped = cr.Dropped > 0
		addNodes(&res, cr)
	} else {
		dropped = s.reg.DropConn(id, dropReason)
	}
	s.log.Info("admin api: drop connection", "route", r.Pattern, "id", id,
		"user", info.User, "protocol", info.Protocol, "dropped", dropped, "remote", r.RemoteAddr)
	// The target is whom the connection was: its user, or its client IP
	// before a login; the id alone when the registry did not know it.
	e := accounting.AuditEntry{Action: "drop_connection", Target: info.User,
		Params: map[string]string{"id": raw}, OK: dropped}
	if info.Protocol != "" {
		e.Params["protocol"] = info.Protocol
		e.Params["ip"] = info.Client.Addr().String()
		if e.Target == "" {
			e.Target = info.Client.Addr().String()
		}
	}
	if e.Target == "" {
		e.Target = raw
	}
	if dropped {
		e.Dropped, e.Outcome = 1, droppedText(1)
	} else {
		e.Outcome = "no live connection with id " + raw
	}
	s.record(ch, e)
	if !dropped {
		return notFound("no live connection with id %d", id)
	}
	res.Dropped = 1
	writeJSON(w, http.StatusOK, res)
	return nil
}
