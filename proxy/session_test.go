package proxy

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/protocols"
)

// logs is what the rig's server logged so far.
func (r *rig) logs() string {
	lw := r.logW
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return r.log.String()
}

// panicHandler is lineHandler whose dialogue panics on "LOGIN crash".
type panicHandler struct{ lineHandler }

func (panicHandler) PreAuth(ctx context.Context, s *protocols.Session) error {
	greet, err := s.Backend.ReadLine(512)
	if err != nil {
		return err
	}
	s.Client.WriteLine(string(greet))
	line, err := s.Client.ReadLine(512)
	if err != nil {
		return err
	}
	if string(line) == "LOGIN crash" {
		panic("handler bug")
	}
	return errors.New("unexpected line")
}

// TestPanicIsRecoveredCountedAndLogged: a handler that panics ends only its
// own session; the panic is counted (mailgate_session_panics_total), logged
// at ERROR with its stack, the connection leaves the counts, and the next
// session is served.
func TestPanicIsRecoveredCountedAndLogged(t *testing.T) {
	r := newRig(t, newBackend(t, false), func(o *ListenerOptions) { o.Handler = panicHandler{} })
	c, br := r.dial("")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	expectLine(t, br, "HELLO")
	c.Write([]byte("LOGIN crash\r\n"))
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the connection stayed open after the handler panicked")
	}
	c.Close()
	waitFor(t, "the panic to be counted", func() bool { return r.reg.Stats().Panics == 1 })
	waitFor(t, "the connection to leave the counts", func() bool { return r.reg.Summary()["all"] == 0 })
	log := r.logs()
	if !strings.Contains(log, `level=ERROR msg="panic in session"`) || !strings.Contains(log, "panic=\"handler bug\"") ||
		!strings.Contains(log, "session_test.go") {
		t.Errorf("log lacks the panic with its stack:\n%s", log)
	}
	c2, br2 := r.dial("")
	c2.SetDeadline(time.Now().Add(5 * time.Second))
	expectLine(t, br2, "HELLO")
	c2.Close()
}

// TestDropCauseReachesHandler: a drop before login cancels the handler's
// context with the reason as its cause, so the handler (and its log) can
// tell an administrator's drop from a shutdown.
func TestDropCauseReachesHandler(t *testing.T) {
	causes := make(chan error, 1)
	h := causeHandler{causes: causes}
	r := newRig(t, newBackend(t, false), func(o *ListenerOptions) { o.Handler = h })
	c, br := r.dial("")
	c.SetDeadline(time.Now().Add(5 * time.Second))
	expectLine(t, br, "HELLO")
	waitFor(t, "the session to be registered", func() bool { return r.reg.Summary()["all"] == 1 })
	for _, i := range r.reg.Connections(accounting.Filter{}) {
		r.reg.DropConn(i.ID, "disabled")
	}
	select {
	case err := <-causes:
		var dc dropCause
		if !errors.As(err, &dc) || dc.reason != "disabled" {
			t.Errorf("context cause = %v, want the drop with reason disabled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's context was not cancelled by the drop")
	}
	if got, _ := br.ReadString('\n'); !strings.HasPrefix(got, "BYE ") {
		t.Errorf("client read %q after the drop, want the goodbye", got)
	}
}

// causeHandler greets, then waits for its context and reports the cause.
type causeHandler struct {
	lineHandler
	causes chan error
}

func (h causeHandler) PreAuth(ctx context.Context, s *protocols.Session) error {
	greet, err := s.Backend.ReadLine(512)
	if err != nil {
		return err
	}
	s.Client.WriteLine(string(greet))
	<-ctx.Done()
	h.causes <- context.Cause(ctx)
	return ctx.Err()
}

// TestListenerUpdateAndStop: Update sends the sessions accepted from then
// on to the new backend while a held session stays on the old one; after
// Stop nothing new is accepted and the held session still relays.
func TestListenerUpdateAndStop(t *testing.T) {
	first, second := newBackend(t, false), newBackend(t, false)
	r := newRig(t, first, nil)
	held, hbr := r.login("held@example.com", 10*time.Second)
	opts := r.ln.Options()
	opts.Backend.Address = second.ln.Addr().String()
	if err := r.ln.Update(opts); err != nil {
		t.Fatal(err)
	}
	moved := opts
	moved.Address = "127.0.0.1:1"
	if err := r.ln.Update(moved); err == nil {
		t.Error("Update with another address succeeded, want a refusal")
	}
	c, br := r.login("new@example.com", 10*time.Second)
	c.Write([]byte("NOOP new\r\n"))
	expectLine(t, br, "ECHO NOOP new")
	held.Write([]byte("NOOP held\r\n"))
	expectLine(t, hbr, "ECHO NOOP held")
	if !strings.Contains(second.received(), "LOGIN new@example.com") || strings.Contains(second.received(), "held@") {
		t.Errorf("second backend got %q, want only the session after Update", second.received())
	}
	if !strings.Contains(first.received(), "NOOP held") {
		t.Errorf("first backend got %q, want the held session's traffic", first.received())
	}
	r.ln.Stop()
	if c, err := net.DialTimeout("tcp", r.ln.Addr().String(), time.Second); err == nil {
		c.Close()
		t.Error("a connect succeeded after Stop")
	}
	held.Write([]byte("NOOP after stop\r\n"))
	expectLine(t, hbr, "ECHO NOOP after stop")
}
