package protocols_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols"
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
