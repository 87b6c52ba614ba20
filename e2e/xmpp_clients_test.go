package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// xmppServer is a real XMPP server the e2e tests can put mailgate in front
// of, and how mailgate passes the client address to it.
type xmppServer struct {
	name, c2s, clientAddress string
}

// xmppServers are the servers scripts/test.sh started: Prosody (no PROXY
// protocol) and ejabberd (its PROXY listener, so mailgate sends proxy-v2).
func xmppServers(t *testing.T) []xmppServer {
	t.Helper()
	var s []xmppServer
	if v := os.Getenv("MAILGATE_PROSODY_C2S"); v != "" {
		s = append(s, xmppServer{"prosody", v, "none"})
	}
	if v := os.Getenv("MAILGATE_EJABBERD_PROXY"); v != "" {
		s = append(s, xmppServer{"ejabberd", v, "proxy-v2"})
	}
	if len(s) == 0 {
		t.Skip("no XMPP server: MAILGATE_PROSODY_C2S and MAILGATE_EJABBERD_PROXY are not set (scripts/test.sh sets them; " +
			`by hand: scripts/prosody.sh start && scripts/ejabberd.sh start && eval "$(scripts/prosody.sh env; scripts/ejabberd.sh env)")`)
	}
	return s
}

// TestXMPPRealClients sends a message through mailgate with two real
// clients from Debian, go-sendxmpp (Go, mellium's ancestor xmpp-go) and
// slixmpp (Python), on the STARTTLS and the direct-TLS listener, to Prosody
// and to ejabberd; the receiver is a slixmpp client logged in through
// mailgate too. Both defects of issue 19 broke exactly this: go-sendxmpp
// writes a newline after </auth>, which mailgate put in front of the new
// stream's XML declaration (both servers answered <not-well-formed/>), and
// post-login features relayed with <starttls/> made slixmpp start a second
// TLS handshake on a direct-TLS link.
func TestXMPPRealClients(t *testing.T) {
	servers := xmppServers(t)
	sendxmpp, err := exec.LookPath("go-sendxmpp")
	if err != nil {
		t.Fatalf("go-sendxmpp is not installed (apt-get install go-sendxmpp; scripts/test.sh does it): %v", err)
	}
	t.Parallel()
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) {
			t.Parallel()
			starttls, direct := freeAddr(t), freeAddr(t)
			m, _, _ := serveListeners(t, "e2e-xmpp-clients-token", []listenerConf{
				{Name: "xmpp", Protocol: "xmpp", Listen: starttls, TLS: "starttls", Backend: srv.c2s, ClientAddress: srv.clientAddress},
				{Name: "xmpps", Protocol: "xmpp", Listen: direct, TLS: "implicit", Backend: srv.c2s, ClientAddress: srv.clientAddress},
			})
			for _, kind := range []string{"starttls", "implicit"} {
				addr := map[string]string{"starttls": starttls, "implicit": direct}[kind]
				for _, client := range []string{"go-sendxmpp", "slixmpp"} {
					t.Run(kind+"/"+client, func(t *testing.T) {
						start := time.Now().Add(-time.Second)
						body := fmt.Sprintf("hello from %s via mailgate %s to %s", client, kind, srv.name)
						recv := startPyClient(t, "bob", "xmppc.py", "--addr", starttls, "--tls", "starttls",
							"--jid", bob, "--password", bobPassword, "--expect", body)
						recv.expect("LOGIN OK bob@example.com/")
						switch client {
						case "go-sendxmpp":
							msg := filepath.Join(t.TempDir(), "message")
							if err := os.WriteFile(msg, []byte(body+"\n"), 0o600); err != nil {
								t.Fatal(err)
							}
							args := []string{"-n", "-u", alice, "-p", alicePassword, "-j", addr, "-m", msg}
							if kind == "implicit" {
								args = append(args, "-t")
							}
							if out, err := runCmd(t, sendxmpp, append(args, bob)...); err != nil {
								t.Fatalf("go-sendxmpp through mailgate's %s listener to %s: %v\n%s", kind, srv.name, err, out)
							}
						case "slixmpp":
							send := startPyClient(t, "alice", "xmppc.py", "--addr", addr, "--tls", kind,
								"--jid", alice, "--password", alicePassword, "--to", bob, "--body", body)
							send.expect("LOGIN OK alice@example.com/")
							send.expect("SENT")
							send.expect("DONE")
							send.wait()
						}
						got := recv.expect("MESSAGE ")
						if !strings.HasPrefix(got, "MESSAGE alice@example.com/") || !strings.HasSuffix(got, " "+body) {
							t.Errorf("bob received %q, want %q from alice", got, body)
						}
						recv.expect("DONE")
						recv.wait()
						// Attribution: alice's login through this listener was seen.
						d := m.userDetail(alice).Protocols["xmpp"]
						if d.LastLogin == nil || d.LastLogin.Before(start) || d.LastIP == nil || *d.LastIP != "127.0.0.1" {
							t.Errorf("GET /api/v1/users/%s xmpp: last login %v from %v, want one after %v from 127.0.0.1", alice, d.LastLogin, d.LastIP, start)
						}
					})
				}
			}
			m.waitSummary("xmpp", 0)
			if log := m.log.String(); strings.Contains(log, "not-well-formed") || strings.Contains(log, "backend failure") {
				t.Errorf("mailgate's log shows a broken stream:\n%s", log)
			}
		})
	}
}
