package protocols_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// pipes returns the near ends of two in-memory connections (the ones
// WatchContext is given) and their far ends.
func pipes(t *testing.T) (client, backend, farClient, farBackend net.Conn) {
	t.Helper()
	client, farClient = net.Pipe()
	backend, farBackend = net.Pipe()
	t.Cleanup(func() {
		for _, c := range []net.Conn{client, backend, farClient, farBackend} {
			c.Close()
		}
	})
	return client, backend, farClient, farBackend
}

// readErr reads one byte from c and returns the error, failing after d.
func readErr(t *testing.T, c net.Conn, d time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("Read did not return within %v", d)
		return nil
	}
}

func TestWatchContextTimeout(t *testing.T) {
	client, backend, _, _ := pipes(t)
	stop := protocols.WatchContext(context.Background(), client, backend, 50*time.Millisecond)
	defer stop()
	for _, c := range []net.Conn{client, backend} {
		if err := readErr(t, c, 10*time.Second); !protocols.IsTimeout(err) {
			t.Errorf("Read after the login timeout = %v, want a timeout", err)
		}
	}
}

func TestWatchContextCancel(t *testing.T) {
	client, backend, _, _ := pipes(t)
	ctx, cancel := context.WithCancel(context.Background())
	stop := protocols.WatchContext(ctx, client, backend, time.Hour)
	defer stop()
	errs := make(chan error, 2)
	for _, c := range []net.Conn{client, backend} {
		go func() {
			_, err := c.Read(make([]byte, 1))
			errs <- err
		}()
	}
	cancel()
	for range 2 {
		select {
		case err := <-errs:
			if !protocols.IsTimeout(err) {
				t.Errorf("Read after cancel = %v, want a timeout", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a blocked Read did not return after cancel")
		}
	}
}

// TestWatchContextStop: stop clears the deadlines, and a cancellation after
// stop no longer touches the connections.
func TestWatchContextStop(t *testing.T) {
	client, backend, farClient, farBackend := pipes(t)
	ctx, cancel := context.WithCancel(context.Background())
	stop := protocols.WatchContext(ctx, client, backend, 50*time.Millisecond)
	stop()
	cancel()
	time.Sleep(100 * time.Millisecond) // past the login deadline
	for _, p := range [][2]net.Conn{{client, farClient}, {backend, farBackend}} {
		go p[1].Write([]byte("x"))
		if err := readErr(t, p[0], 10*time.Second); err != nil {
			t.Errorf("Read after stop = %v, want the byte", err)
		}
	}
}

type timeoutErr struct{ timeout bool }

func (e timeoutErr) Error() string   { return "net op" }
func (e timeoutErr) Timeout() bool   { return e.timeout }
func (e timeoutErr) Temporary() bool { return false }

func TestIsTimeout(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{os.ErrDeadlineExceeded, true},
		{fmt.Errorf("imap: client: %w", os.ErrDeadlineExceeded), true},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, true},
		{timeoutErr{timeout: true}, true},
		{timeoutErr{timeout: false}, false},
	}
	for _, tt := range tests {
		if got := protocols.IsTimeout(tt.err); got != tt.want {
			t.Errorf("IsTimeout(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestClientError(t *testing.T) {
	boom := errors.New("boom")
	tests := []struct {
		err      error
		text     string
		quit     bool
		original error
	}{
		{io.EOF, "imap: client ended the session before login: EOF", true, io.EOF},
		{fmt.Errorf("read: %w", io.ErrUnexpectedEOF), "imap: client ended the session before login: read: unexpected EOF", true, io.ErrUnexpectedEOF},
		{boom, "imap: client: boom", false, boom},
	}
	for _, tt := range tests {
		err := protocols.ClientError("imap", tt.err)
		if err.Error() != tt.text {
			t.Errorf("ClientError(%v) = %q, want %q", tt.err, err, tt.text)
		}
		if errors.Is(err, protocols.ErrClientQuit) != tt.quit {
			t.Errorf("ClientError(%v): errors.Is(ErrClientQuit) = %v, want %v", tt.err, !tt.quit, tt.quit)
		}
		if !errors.Is(err, tt.original) {
			t.Errorf("ClientError(%v) does not wrap the original error", tt.err)
		}
	}
}

func TestBackendError(t *testing.T) {
	boom := errors.New("boom")
	err := protocols.BackendError("pop3", boom)
	if want := "pop3: backend failure: boom"; err.Error() != want {
		t.Errorf("BackendError = %q, want %q", err, want)
	}
	if !errors.Is(err, protocols.ErrBackend) || !errors.Is(err, boom) {
		t.Errorf("BackendError = %v: does not wrap ErrBackend and the original", err)
	}
	// Wrapped once only.
	if again := protocols.BackendError("pop3", err); again != err {
		t.Errorf("BackendError(BackendError(e)) = %q, want it unchanged", again)
	}
}

func TestLimitsWithDefaults(t *testing.T) {
	if got := (protocols.Limits{}).WithDefaults(); got != protocols.DefaultLimits {
		t.Errorf("zero Limits.WithDefaults() = %+v, want %+v", got, protocols.DefaultLimits)
	}
	if got := (protocols.Limits{MaxLine: -1, MaxBadCommands: -1, LoginTimeout: -1, MaxLiteral: -1}).WithDefaults(); got != protocols.DefaultLimits {
		t.Errorf("negative Limits.WithDefaults() = %+v, want %+v", got, protocols.DefaultLimits)
	}
	set := protocols.Limits{MaxLine: 1, MaxBadCommands: 2, LoginTimeout: time.Second, MaxLiteral: 4}
	if got := set.WithDefaults(); got != set {
		t.Errorf("Limits.WithDefaults() = %+v, want %+v unchanged", got, set)
	}
}

func TestDefaults(t *testing.T) {
	var o protocols.Observer = protocols.NopObserver{}
	o.TLSStarted()
	o.AuthAttempt("alice", "PLAIN")
	o.Authenticated("alice", "PLAIN")
	o.AuthFailed("alice", "PLAIN", true)
	var g protocols.Gate = protocols.AllowAll{}
	if got := g.CheckLogin("alice"); got != protocols.DenyNone {
		t.Errorf("AllowAll.CheckLogin = %q, want DenyNone", got)
	}
}

func TestWriteFlush(t *testing.T) {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	protocols.WriteFlush(w, "* BYE x\r\n")
	if buf.String() != "* BYE x\r\n" {
		t.Errorf("WriteFlush through a bufio.Writer wrote %q", buf.String())
	}
	buf.Reset()
	protocols.WriteFlush(&buf, "</stream:stream>")
	if buf.String() != "</stream:stream>" {
		t.Errorf("WriteFlush to a plain writer wrote %q", buf.String())
	}
}

// dialogue starts a Dialogue over in-memory connections whose client writes
// land in out, with a recording Observer and gate and a debug log in logs.
func dialogue(t *testing.T, ctx context.Context) (d *protocols.Dialogue, out, logs *bytes.Buffer, obs *protocoltest.Observer, gate *protocoltest.Gate) {
	t.Helper()
	cli, be := protocoltest.NewMemConn(nil, 143), protocoltest.NewMemConn(nil, 143)
	obs, gate, logs = &protocoltest.Observer{}, protocoltest.NewGate(), &bytes.Buffer{}
	s := &protocols.Session{
		ID:       9,
		Client:   protocols.NewConn(cli),
		Backend:  protocols.NewConn(be),
		Observer: obs,
		Gate:     gate,
		Log:      slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	dd := protocols.NewDialogue(ctx, s, "imap", "protocol", "imap")
	t.Cleanup(dd.Finish)
	return &dd, &cli.Out, logs, obs, gate
}

func TestDialogueFail(t *testing.T) {
	f := protocols.Farewell{Timeout: "* BYE Login timeout", Backend: "* BYE [UNAVAILABLE] later"}
	tests := []struct {
		name    string
		err     error
		told    bool
		want    string // written to the client
		wantErr error
		text    string // the error's text
		log     string
	}{
		{"timeout", &net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, false, "pending* BYE Login timeout\r\n",
			protocols.ErrLoginTimeout, "imap: login timeout", "level=INFO msg=\"login timeout\""},
		{"timeout, told", os.ErrDeadlineExceeded, true, "pending", protocols.ErrLoginTimeout, "imap: login timeout", "login timeout"},
		{"backend", protocols.BackendError("imap", io.EOF), false, "pending* BYE [UNAVAILABLE] later\r\n",
			protocols.ErrBackend, "imap: backend failure: EOF", "level=WARN msg=\"backend failure before login\""},
		{"backend, told", protocols.BackendError("imap", io.EOF), true, "pending", protocols.ErrBackend, "imap: backend failure: EOF", "backend failure"},
		{"other", protocols.ClientError("imap", io.EOF), false, "pending", protocols.ErrClientQuit,
			"imap: client ended the session before login: EOF", "level=DEBUG msg=\"pre-auth ended\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, out, logs, _, _ := dialogue(t, context.Background())
			d.Told = tt.told
			d.Client.W.WriteString("pending")
			err := d.Fail(tt.err, f)
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.text {
				t.Errorf("Fail() = %v, want %q wrapping %v", err, tt.text, tt.wantErr)
			}
			if out.String() != tt.want {
				t.Errorf("client got %q, want %q", out.String(), tt.want)
			}
			if !d.Told && tt.want != "pending" {
				t.Error("Told not set after the farewell")
			}
			if !strings.Contains(logs.String(), tt.log) || !strings.Contains(logs.String(), "session=9 protocol=imap") {
				t.Errorf("log %q lacks %q", logs.String(), tt.log)
			}
		})
	}
}

func TestDialogueFailCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	d, out, _, _, _ := dialogue(t, ctx)
	cancel()
	err := d.Fail(os.ErrDeadlineExceeded, protocols.Farewell{Timeout: "* BYE Login timeout"})
	if !errors.Is(err, context.Canceled) || err.Error() != "imap: context canceled" {
		t.Errorf("Fail() after cancel = %v, want imap: context canceled", err)
	}
	if out.Len() != 0 {
		t.Errorf("client got %q, want nothing: the proxy says goodbye", out.String())
	}
}

func TestDialogueFlushAndLoop(t *testing.T) {
	d, out, _, _, _ := dialogue(t, context.Background())
	calls := 0
	err := d.Loop(func() (bool, error) {
		calls++
		d.Client.W.WriteString("c")
		d.Backend.W.WriteString("b")
		return calls == 3, nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Loop() = %v after %d calls, want nil after 3", err, calls)
	}
	if out.String() != "ccc" || d.Backend.Conn.(*protocoltest.MemConn).Out.String() != "bbb" {
		t.Errorf("Loop did not flush both sides: client %q", out.String())
	}
	boom := errors.New("boom")
	if err := d.Loop(func() (bool, error) { return false, boom }); err != boom {
		t.Errorf("Loop() = %v, want next's error", err)
	}
}

func TestDialogueCheckLogin(t *testing.T) {
	d, _, logs, obs, gate := dialogue(t, context.Background())
	gate.Set("bob", protocols.DenyDisabled)
	if code := d.CheckLogin("alice", "", "PLAIN"); code != protocols.DenyNone {
		t.Errorf("CheckLogin(alice) = %q", code)
	}
	if code := d.CheckLogin("alice", "bob", "PLAIN"); code != protocols.DenyDisabled {
		t.Errorf("CheckLogin(alice as bob) = %q, want the authzid's denial", code)
	}
	d.LoginLost("alice", "LOGIN")
	got := strings.Join(obs.Events(), "|")
	if want := "attempt alice PLAIN|attempt alice PLAIN|fail alice LOGIN temporary"; got != want {
		t.Errorf("events = %q, want %q", got, want)
	}
	if asked := strings.Join(gate.Asked(), ","); asked != "alice,alice,bob" {
		t.Errorf("gate asked about %q", asked)
	}
	for _, want := range []string{"outcome=denied reason=disabled", "mechanism=LOGIN outcome=tempfail"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log %q lacks %q", logs.String(), want)
		}
	}
}

func TestLinesWriteFlush(t *testing.T) {
	l := protocols.Lines{protocols.ByeDropped: "-ERR dropped", "": "-ERR closed"}
	for reason, want := range map[string]string{protocols.ByeDropped: "-ERR dropped\r\n", protocols.ByeTimeout: "-ERR closed\r\n"} {
		var buf bytes.Buffer
		l.WriteFlush(bufio.NewWriter(&buf), reason)
		if buf.String() != want {
			t.Errorf("%s: wrote %q, want %q", reason, buf.String(), want)
		}
	}
}
