package main

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/proxy"
)

func planRig(t *testing.T, ls []configs.Listener) map[string]*proxy.Listener {
	t.Helper()
	srv := proxy.NewServer(accounting.New(accounting.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { srv.Close() })
	running := map[string]*proxy.Listener{}
	for _, lc := range ls {
		opts, err := listenerOptions(lc, "test", nil)
		if err != nil {
			t.Fatal(err)
		}
		l, err := srv.Listen(opts)
		if err != nil {
			t.Fatal(err)
		}
		running[lc.Name] = l
	}
	return running
}

func imapListener(name, listen, backend string) configs.Listener {
	c := configs.Config{Listeners: []configs.Listener{{Name: name, Protocol: protocols.ProtoIMAP, Listen: listen,
		Backend: configs.Backend{Address: backend}}}}
	c.SetDefaults()
	return c.Listeners[0]
}

// TestPlanListeners: a changed backend is an update, a new name an open, a
// name gone a stop, a new name on a running address and protocol a rename
// (the socket stays; a new name on :0 is a new socket), and a listener
// whose options cannot be built refuses
// the whole plan.
func TestPlanListeners(t *testing.T) {
	a := imapListener("a", "127.0.0.1:0", "127.0.0.1:1")
	b := imapListener("b", "127.0.0.1:0", "127.0.0.1:1")
	b.Protocol = protocols.ProtoPOP
	cur := []configs.Listener{a, b}
	running := planRig(t, cur)

	a2 := a
	a2.Backend.Address = "127.0.0.1:2"
	c := imapListener("c", "127.0.0.2:0", "127.0.0.1:1")
	p, err := planListeners(running, cur, []configs.Listener{a2, c}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"~a", "+c", "-b"}; !slices.Equal(p.changes, want) {
		t.Errorf("changes = %v, want %v", p.changes, want)
	}
	if len(p.update) != 1 || p.update[0].l != running["a"] || p.update[0].opts.Backend.Address != "127.0.0.1:2" {
		t.Errorf("update = %+v, want a with the new backend", p.update)
	}
	if len(p.open) != 1 || p.open[0].Name != "c" || len(p.stop) != 1 || p.stop[0] != running["b"] {
		t.Errorf("open %v, stop %v; want c opened and b stopped", p.open, p.stop)
	}

	renamed := a
	renamed.Name = "imap-main"
	renamed.Listen = running["a"].Addr().String() // a :0 is a new port each time; a port is a socket
	p, err = planListeners(running, cur, []configs.Listener{renamed, b}, "test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"~imap-main"}; !slices.Equal(p.changes, want) || len(p.open) != 0 || p.update[0].l != running["a"] {
		t.Errorf("rename: changes %v, open %v, update %+v; want a renamed in place", p.changes, p.open, p.update)
	}

	broken := c
	broken.Backend.TLS = protocols.TLSImplicit
	broken.Backend.CAFile = "/nonexistent/ca.pem"
	if _, err := planListeners(running, cur, []configs.Listener{a, b, broken}, "test", nil); err == nil {
		t.Error("a plan with an unreadable ca_file succeeded, want a refusal")
	}
	if p, err := planListeners(running, cur, cur, "test", nil); err != nil || len(p.changes) != 0 {
		t.Errorf("the same config planned %v (%v), want nothing", p.changes, err)
	}
}
