package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/adminapi"
)

const ctlUsage = `usage: mailgate ctl [--addr URL] [--token T] COMMAND [ARGS]

The admin API address and token come from --addr/--token or the environment
(MAILGATE_ADMIN, default http://127.0.0.1:1880; MAILGATE_TOKEN, or
MAILGATE_TOKEN_FILE naming a file that holds it).

Commands:
  whoami                            the token's name, role and what it may do
  who [--protocol P] [--json]       tab counts and the rows of a tab (default all)
  connections [--protocol P] [--user U] [--ip IP] [--node NAME] [--json]
                                    the live connections one by one (with their node)
  nodes [--json]                    the cluster's nodes: state, live connections, heartbeat
                                    (a single node lists itself)
  kick USER [--protocol P]          drop a user's sessions (all protocols by default)
  drop ID                           drop one connection by its id (see connections)
  resync USER --protocol P          drop, reconcile and run the backend resync hook
  enable USER PROTOCOL              enable a protocol for a user
  disable USER PROTOCOL [--keep]    disable it (and drop live sessions unless --keep)
  domain enable|disable DOMAIN      enable or disable every user of a domain
  ips USER                          the user's authenticated-IP history
  logins USER [--json]              the user's last login attempts, every protocol
  devices USER [--json]             the user's ActiveSync devices, blocked or not
  device block|allow|drop|resync USER ID
                                    block an ActiveSync device (403 before the backend),
                                    lift the block, end its live requests (a Ping), or
                                    drop them and run the eas resync hook with {device}
  block IP|CIDR [--reason R] [--for 1h]
  unblock IP|CIDR
  lockouts                          current brute-force lockouts
  unlock ip|user KEY                clear a brute-force lockout
  audit [--actor A] [--target T] [--since 24h|TIME] [--limit N] [--json]
                                    the changes made through the API, newest first
  reload                            read the config file again and apply it (as SIGHUP),
                                    and say what changed or why it was refused
  upgrade                           start the binary again on the same sockets (as SIGUSR2):
                                    the new process serves, the old one drains its sessions

Every command that changes something takes --reason TEXT, recorded in the
audit trail with the token's name (required when admin.require_reason is set).

In a cluster every node answers for the whole cluster: a drop says how many
sessions went on each node (and which live nodes did not answer), and a change
is refused (cluster_unavailable) while the node asked cannot reach Redis.
`

// ctl is one invocation's client.
type ctl struct {
	base   string
	token  string
	http   *http.Client
	out    io.Writer
	reason string // sent with every change (adminapi.ReasonHeader)
}

func cmdCtl(args []string) error {
	return runCtl(args, os.Stdout)
}

func runCtl(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	addr := fs.String("addr", envOr("MAILGATE_ADMIN", "http://127.0.0.1:1880"), "admin API base URL")
	token := fs.String("token", os.Getenv("MAILGATE_TOKEN"), "admin API token")
	protocol := fs.String("protocol", "", "protocol key")
	asJSON := fs.Bool("json", false, "print JSON")
	keep := fs.Bool("keep", false, "disable: keep live sessions")
	reason := fs.String("reason", "", "why: recorded in the audit trail (and a block's reason)")
	actor := fs.String("actor", "", "audit: only this token's changes")
	target := fs.String("target", "", "audit: only changes to this user, domain, network or IP")
	since := fs.String("since", "", "audit: only changes since this duration ago (24h) or time (RFC 3339)")
	limit := fs.Int("limit", 0, "audit: at most this many entries (default 100)")
	forDur := fs.Duration("for", 0, "block: duration (default until unblocked)")
	user := fs.String("user", "", "connections: only this user's")
	ip := fs.String("ip", "", "connections: only those from this client IP")
	node := fs.String("node", "", "connections: only those held by this cluster node")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%v\n\n%s", err, ctlUsage)
	}
	if len(pos) == 0 {
		return errors.New(ctlUsage)
	}
	if *token == "" {
		if f := os.Getenv("MAILGATE_TOKEN_FILE"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			*token = strings.TrimSpace(string(b))
		}
	}
	if *token == "" {
		return errors.New("no token: pass --token or set MAILGATE_TOKEN")
	}
	if !strings.Contains(*addr, "://") {
		*addr = "http://" + *addr
	}
	c := &ctl{base: strings.TrimRight(*addr, "/"), token: *token, http: &http.Client{Timeout: 60 * time.Second}, out: out, reason: *reason}
	need := func(n int) error {
		if len(pos) != n+1 {
			return fmt.Errorf("%s takes %d argument(s)\n\n%s", pos[0], n, ctlUsage)
		}
		return nil
	}
	esc := url.PathEscape
	switch pos[0] {
	case "whoami":
		if err := need(0); err != nil {
			return err
		}
		var w adminapi.Whoami
		if err := c.call("GET", "/api/v1/whoami", nil, &w); err != nil {
			return err
		}
		may := "read only"
		if len(w.Actions) > 0 {
			may = strings.Join(w.Actions, ", ")
		}
		fmt.Fprintf(out, "%s (%s): %s\n", w.Name, w.Role, may)
	case "who":
		if err := need(0); err != nil {
			return err
		}
		return c.who(*protocol, *asJSON)
	case "kick":
		if err := need(1); err != nil {
			return err
		}
		var r adminapi.DropResult
		if err := c.call("POST", "/api/v1/users/"+esc(pos[1])+"/drop"+protoQuery(*protocol), nil, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "dropped %d session(s) of %s%s\n", r.Dropped, pos[1], nodeCounts(r))
	case "drop":
		if err := need(1); err != nil {
			return err
		}
		if _, err := strconv.ParseUint(pos[1], 10, 64); err != nil {
			return fmt.Errorf("drop takes a connection id (a number, see ctl connections), not %q", pos[1])
		}
		var r adminapi.DropResult
		if err := c.call("DELETE", "/api/v1/connections/"+esc(pos[1]), nil, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "dropped connection %s%s\n", pos[1], nodeCounts(r))
	case "connections":
		if err := need(0); err != nil {
			return err
		}
		return c.connections(*protocol, *user, *ip, *node, *asJSON)
	case "nodes":
		if err := need(0); err != nil {
			return err
		}
		return c.nodes(*asJSON)
	case "resync":
		if err := need(1); err != nil {
			return err
		}
		if *protocol == "" {
			return errors.New("resync needs --protocol")
		}
		var r adminapi.ResyncResult
		if err := c.call("POST", "/api/v1/users/"+esc(pos[1])+"/resync"+protoQuery(*protocol), nil, &r); err != nil {
			return err
		}
		failed := false
		for _, s := range r.Steps {
			mark := "ok"
			if !s.OK {
				mark, failed = "FAILED", true
			}
			fmt.Fprintf(out, "%-10s %-6s %s\n", s.Step, mark, s.Detail)
		}
		if failed {
			return errors.New("resync: a step failed")
		}
	case "enable", "disable":
		if err := need(2); err != nil {
			return err
		}
		body := map[string]bool{"enabled": pos[0] == "enable"}
		if pos[0] == "disable" {
			body["drop"] = !*keep
		}
		var r adminapi.ProtocolResult
		if err := c.call("PUT", "/api/v1/users/"+esc(pos[1])+"/protocols/"+esc(pos[2]), body, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s %s: enabled=%v, dropped %d session(s)\n", r.User, r.Protocol, r.Enabled, r.Dropped)
	case "domain":
		if err := need(2); err != nil {
			return err
		}
		if pos[1] != "enable" && pos[1] != "disable" {
			return errors.New("domain enable|disable DOMAIN")
		}
		var r adminapi.DomainResult
		if err := c.call("PUT", "/api/v1/domains/"+esc(pos[2]), map[string]bool{"enabled": pos[1] == "enable"}, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "domain %s: enabled=%v, dropped %d session(s)\n", r.Domain, r.Enabled, r.Dropped)
	case "ips":
		if err := need(1); err != nil {
			return err
		}
		var r adminapi.IPList
		if done, err := c.userGet(pos[1], "ips", &r, *asJSON); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "IP\tPROTOCOL\tFIRST SEEN\tLAST SEEN\tCOUNT")
		for _, ip := range r.IPs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", ip.IP, ip.Protocol, ip.FirstSeen.Format(time.RFC3339), ip.LastSeen.Format(time.RFC3339), ip.Count)
		}
		return tw.Flush()
	case "logins":
		if err := need(1); err != nil {
			return err
		}
		var r adminapi.LoginList
		if done, err := c.userGet(pos[1], "logins", &r, *asJSON); done || err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tPROTOCOL\tIP\tMECHANISM\tRESULT\tREASON\tCOUNT\tSINCE")
		for _, l := range r.Logins {
			reason, mech, since := l.Reason, l.Mechanism, "-"
			if reason == "" {
				reason = "-"
			}
			if mech == "" {
				mech = "-"
			}
			if l.Count > 1 {
				since = l.First.Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", l.Time.Format(time.RFC3339), l.Protocol, l.IP, mech, l.Result, reason, l.Count, since)
		}
		return tw.Flush()
	case "devices":
		if err := need(1); err != nil {
			return err
		}
		return c.devices(pos[1], *asJSON)
	case "device":
		if err := need(3); err != nil {
			return err
		}
		return c.device(pos[1], pos[2], pos[3])
	case "block":
		if err := need(1); err != nil {
			return err
		}
		req := adminapi.BlockRequest{Network: pos[1], Reason: *reason}
		if *forDur > 0 {
			req.Duration = forDur.String()
		}
		var r struct {
			Block   adminapi.BlockJSON `json:"block"`
			Dropped int                `json:"dropped"`
		}
		if err := c.call("POST", "/api/v1/blocks", req, &r); err != nil {
			return err
		}
		until := "until unblocked"
		if r.Block.Expires != nil {
			until = "until " + r.Block.Expires.Format(time.RFC3339)
		}
		fmt.Fprintf(out, "blocked %s %s, dropped %d session(s)\n", r.Block.Network, until, r.Dropped)
	case "unblock":
		if err := need(1); err != nil {
			return err
		}
		if err := c.call("DELETE", "/api/v1/blocks?network="+url.QueryEscape(pos[1]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "unblocked %s\n", pos[1])
	case "unlock":
		if err := need(2); err != nil {
			return err
		}
		if err := c.call("DELETE", "/api/v1/lockouts?kind="+url.QueryEscape(pos[1])+"&key="+url.QueryEscape(pos[2]), nil, nil); err != nil {
			return err
		}
		fmt.Fprintf(out, "cleared the lockout of %s %s\n", pos[1], pos[2])
	case "audit":
		if err := need(0); err != nil {
			return err
		}
		q := url.Values{}
		for k, v := range map[string]string{"actor": *actor, "target": *target, "since": *since} {
			if v != "" {
				q.Set(k, v)
			}
		}
		if *limit > 0 {
			q.Set("limit", strconv.Itoa(*limit))
		}
		var r adminapi.AuditList
		path := "/api/v1/audit"
		if len(q) > 0 {
			path += "?" + q.Encode()
		}
		if err := c.call("GET", path, nil, &r); err != nil {
			return err
		}
		if *asJSON {
			return json.NewEncoder(out).Encode(r)
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TIME\tACTOR\tROLE\tSOURCE\tACTION\tTARGET\tOK\tDROPPED\tREASON\tOUTCOME")
		for _, e := range r.Entries {
			reason := e.Reason
			if reason == "" {
				reason = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", e.Time.Format(time.RFC3339), e.Actor, e.Role, e.Source,
				e.Action+paramText(e.Params), e.Target, yesNo(e.OK), e.Dropped, reason, e.Outcome)
		}
		return tw.Flush()
	case "reload":
		if err := need(0); err != nil {
			return err
		}
		var r adminapi.ReloadResult
		if err := c.call("POST", "/api/v1/reload", nil, &r); err != nil {
			return err
		}
		if len(r.Changed) == 0 {
			fmt.Fprintln(out, "reloaded: nothing changed")
		}
		for _, ch := range r.Changed {
			fmt.Fprintln(out, "applied:", ch)
		}
		if len(r.Restart) > 0 {
			fmt.Fprintln(out, "changed, but waits for a restart:", strings.Join(r.Restart, ", "))
		}
	case "upgrade":
		if err := need(0); err != nil {
			return err
		}
		var r adminapi.UpgradeResult
		if err := c.call("POST", "/api/v1/upgrade", nil, &r); err != nil {
			return err
		}
		fmt.Fprintf(out, "upgraded: pid %d (%s) serves; pid %d drains its sessions for up to %s, then says goodbye over %s\n",
			r.NewPID, r.Binary, r.OldPID, r.DrainTimeout, r.DrainSpread)
	case "lockouts":
		var r struct {
			Lockouts []adminapi.LockoutJSON `json:"lockouts"`
		}
		if err := c.call("GET", "/api/v1/lockouts", nil, &r); err != nil {
			return err
		}
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tKEY\tUNTIL")
		for _, l := range r.Lockouts {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", l.Kind, l.Key, l.Until.Format(time.RFC3339))
		}
		return tw.Flush()
	default:
		return fmt.Errorf("unknown ctl command %q\n\n%s", pos[0], ctlUsage)
	}
	return nil
}

// paramText is an audit entry's parameters as " (k=v k=v)", sorted.
func paramText(p map[string]string) string {
	if len(p) == 0 {
		return ""
	}
	keys := make([]string, 0, len(p))
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + p[k]
	}
	return " (" + strings.Join(parts, " ") + ")"
}

func protoQuery(p string) string {
	if p == "" {
		return ""
	}
	return "?protocol=" + url.QueryEscape(p)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// parseInterspersed parses flags wherever they appear among the arguments.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// call sends a request and decodes the JSON answer into out (if not nil).
// An API error becomes a Go error with the server's code and message.
// userGet reads GET /api/v1/users/{user}/{what} into r; with asJSON it
// prints r as JSON and done is true (nothing is left to print).
func (c *ctl) userGet(user, what string, r any, asJSON bool) (done bool, err error) {
	if err := c.call("GET", "/api/v1/users/"+url.PathEscape(user)+"/"+what, nil, r); err != nil {
		return false, err
	}
	if asJSON {
		return true, json.NewEncoder(c.out).Encode(r)
	}
	return false, nil
}

func (c *ctl) call(method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	if method != http.MethodGet && c.reason != "" {
		req.Header.Set(adminapi.ReasonHeader, c.reason)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		var e adminapi.ErrorResponse
		if json.Unmarshal(b, &e) == nil && e.Error.Code != "" {
			return fmt.Errorf("%s %s: %s (%s)", method, path, e.Error.Message, e.Error.Code)
		}
		return fmt.Errorf("%s %s: HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(b, out)
}

// who prints the tab counts and the rows of one tab, like the page.
func (c *ctl) who(protocol string, asJSON bool) error {
	if protocol == "" {
		protocol = "all"
	}
	var sum map[string]int
	if err := c.call("GET", "/api/v1/connections/summary", nil, &sum); err != nil {
		return err
	}
	var rows adminapi.UserList
	if err := c.call("GET", "/api/v1/users"+protoQuery(protocol), nil, &rows); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(c.out).Encode(map[string]any{"summary": sum, "users": rows})
	}
	tabs := []string{"all", "smtp", "imap", "pop", "xmpp", "eas", "mapi", "ews", "webdav", "webmail"}
	var parts []string
	for _, t := range tabs {
		parts = append(parts, fmt.Sprintf("%s %d", t, sum[t]))
	}
	fmt.Fprintln(c.out, strings.Join(parts, "  "))
	fmt.Fprintln(c.out)
	// A cluster's rows say which nodes hold them: a last column then.
	withNodes := false
	for _, r := range rows.Users {
		withNodes = withNodes || len(r.Nodes) > 0
	}
	nodesHead := ""
	if withNodes {
		nodesHead = "\tNODES"
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "USER\tPROTOCOLS\tENABLED\tDOMAIN\tCONNS\tIP CONNECTIONS\tDURATION\tLAST LOGIN (%s)\tLAST IP%s\n", rows.Protocol, nodesHead)
	for _, r := range rows.Users {
		user := r.User
		if user == "" {
			user = "(not logged in)"
		}
		var ips []string
		for _, ip := range r.IPConnections {
			ips = append(ips, fmt.Sprintf("%s(%d)", ip.IP, ip.Count))
		}
		sort.Strings(r.Protocols)
		last, lastIP, dur := "-", "-", "-"
		if r.LastLogin != nil {
			last = r.LastLogin.Format(time.RFC3339)
		}
		if r.LastIP != nil {
			lastIP = r.LastIP.String()
		}
		if r.DurationSeconds > 0 {
			dur = (time.Duration(r.DurationSeconds) * time.Second).String()
		}
		nodes := ""
		if withNodes {
			nodes = "\t" + dash(strings.Join(r.Nodes, ","))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s%s\n", user, strings.Join(r.Protocols, ","), yesNo(r.ProtocolEnabled),
			yesNo(r.DomainEnabled), r.Connections, strings.Join(ips, " "), dur, last, lastIP, nodes)
	}
	return tw.Flush()
}

// connections prints the live connections one by one:
// GET /api/v1/connections with its filters (node: ?node=).
func (c *ctl) connections(protocol, user, ip, node string, asJSON bool) error {
	q := url.Values{}
	for k, v := range map[string]string{"protocol": protocol, "user": user, "ip": ip, "node": node} {
		if v != "" {
			q.Set(k, v)
		}
	}
	path := "/api/v1/connections"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var r adminapi.ConnectionList
	if err := c.call("GET", path, nil, &r); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(c.out).Encode(r)
	}
	sort.Slice(r.Connections, func(i, j int) bool { return r.Connections[i].ID < r.Connections[j].ID })
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNODE\tPROTOCOL\tUSER\tCLIENT\tSTATE\tTLS\tMECHANISM\tSTARTED")
	for _, x := range r.Connections {
		who := x.User
		if who == "" {
			who = "(not logged in)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, dash(x.Node), x.Protocol, who,
			netip.AddrPortFrom(x.ClientIP, x.ClientPort), x.State, yesNo(x.TLS), dash(x.Mechanism), x.StartedAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

// nodes prints GET /api/v1/nodes: a line about the cluster, then a table
// of its nodes.
func (c *ctl) nodes(asJSON bool) error {
	var r adminapi.NodeList
	if err := c.call("GET", "/api/v1/nodes", nil, &r); err != nil {
		return err
	}
	if asJSON {
		return json.NewEncoder(c.out).Encode(r)
	}
	if !r.Cluster {
		fmt.Fprintf(c.out, "single node %s (no cluster configured)\n", dash(r.Node))
	} else {
		up := 0
		for _, n := range r.Nodes {
			if n.State == "up" {
				up++
			}
		}
		redis := "Redis up"
		if !r.RedisUp {
			redis = "Redis DOWN"
		}
		fmt.Fprintf(c.out, "cluster of %d node(s), %d up; answered by %s, %s\n", len(r.Nodes), up, r.Node, redis)
	}
	if r.Degraded {
		fmt.Fprintf(c.out, "WARNING: %s cannot reach Redis: it serves with the last known policy; changes are refused until Redis is back\n", r.Node)
	}
	fmt.Fprintln(c.out)
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tLIVE\tADMIN\tVERSION\tLAST-HEARTBEAT\tDEGRADED")
	for _, n := range r.Nodes {
		hb := "-"
		if n.LastHeartbeat != nil {
			hb = n.LastHeartbeat.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", n.Name, n.State, n.Connections, dash(n.Admin), dash(n.Version), hb, yesNo(n.Degraded))
	}
	return tw.Flush()
}

// nodeCounts is a cluster drop's per-node counts, " (on a: 1, b: 2; no
// answer from c)", or "" when the answer has none (a single node).
func nodeCounts(r adminapi.DropResult) string {
	if len(r.Nodes) == 0 && len(r.Missing) == 0 {
		return ""
	}
	names := make([]string, 0, len(r.Nodes))
	for n := range r.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	var parts []string
	if len(names) > 0 {
		counts := make([]string, len(names))
		for i, n := range names {
			counts[i] = fmt.Sprintf("%s: %d", n, r.Nodes[n])
		}
		parts = append(parts, "on "+strings.Join(counts, ", "))
	}
	if len(r.Missing) > 0 {
		missing := append([]string(nil), r.Missing...)
		sort.Strings(missing)
		parts = append(parts, "no answer from "+strings.Join(missing, ", "))
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

// devices prints a user's ActiveSync devices.
func (c *ctl) devices(user string, asJSON bool) error {
	var r adminapi.DeviceList
	if done, err := c.userGet(user, "devices", &r, asJSON); done || err != nil {
		return err
	}
	if len(r.Devices) == 0 {
		fmt.Fprintf(c.out, "no ActiveSync device of %s\n", r.User)
		return nil
	}
	tw := tabwriter.NewWriter(c.out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DEVICE\tTYPE\tSTATE\tLIVE\tLAST COMMAND\tLAST SEEN\tLAST IP\tUSER AGENT")
	for _, d := range r.Devices {
		state := "allowed"
		switch {
		case d.Blocked:
			state = "blocked by " + d.Block.By
			if d.Block.Reason != "" {
				state += ": " + d.Block.Reason
			}
		case d.TypeRefused:
			state = "type refused"
		}
		seen, ip := "-", "-"
		if d.LastSeen != nil {
			seen = d.LastSeen.Format(time.RFC3339)
		}
		if d.LastIP != nil {
			ip = d.LastIP.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", d.ID, dash(d.Type), state, d.Live, dash(d.LastCommand), seen, ip, dash(d.UserAgent))
	}
	return tw.Flush()
}

// device runs a device action: block, allow, drop or resync.
func (c *ctl) device(action, user, id string) error {
	path := "/api/v1/users/" + url.PathEscape(user) + "/devices/" + url.PathEscape(id) + "/"
	switch action {
	case "block", "allow":
		var r adminapi.DeviceResult
		if err := c.call("POST", path+action, nil, &r); err != nil {
			return err
		}
		if r.Blocked {
			fmt.Fprintf(c.out, "blocked device %s of %s, dropped %d session(s)\n", r.DeviceID, r.User, r.Dropped)
		} else {
			fmt.Fprintf(c.out, "allowed device %s of %s\n", r.DeviceID, r.User)
		}
	case "drop":
		var r adminapi.DropResult
		if err := c.call("POST", path+"drop", nil, &r); err != nil {
			return err
		}
		fmt.Fprintf(c.out, "dropped %d session(s) of device %s of %s%s\n", r.Dropped, id, user, nodeCounts(r))
	case "resync":
		var r adminapi.DeviceResyncResult
		if err := c.call("POST", path+"resync", nil, &r); err != nil {
			return err
		}
		failed := false
		for _, s := range r.Steps {
			mark := "ok"
			if !s.OK {
				mark, failed = "FAILED", true
			}
			fmt.Fprintf(c.out, "%-10s %-6s %s\n", s.Step, mark, s.Detail)
		}
		if failed {
			return errors.New("resync: a step failed")
		}
	default:
		return fmt.Errorf("device block|allow|drop|resync USER ID, not %q", action)
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
