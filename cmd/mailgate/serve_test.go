package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/configs"
)

// TestStartFailureUndoesEverything: when the last part of a start fails
// (the admin port is taken), the parts that had started are taken back:
// the stream listener's and the HTTP front's ports are free again and the
// state file is closed (bbolt allows one opener). Issue 20: start used to
// leave the store open and the HTTP front running.
func TestStartFailureUndoesEverything(t *testing.T) {
	dir := t.TempDir()
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	imapAddr, httpAddr := freePort(t), freePort(t)
	state := filepath.Join(dir, "state.db")
	y := fmt.Sprintf(`node: undo
state: %s
admin:
  listen: %s
  token: t
listeners:
  - name: imap
    protocol: imap
    listen: %s
    backend:
      address: 127.0.0.1:1
http:
  plain_listen: %s
  webdav:
    backend: http://127.0.0.1:1
`, state, taken.Addr(), imapAddr, httpAddr)
	path := filepath.Join(dir, "mailgate.yaml")
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil {
		t.Fatal("start() = nil with the admin port taken, want an error")
	}
	for _, addr := range []string{imapAddr, httpAddr} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Errorf("%s still bound after the failed start: %v", addr, err)
			continue
		}
		ln.Close()
	}
	st, err := accounting.OpenStore(state, 10)
	if err != nil {
		t.Fatalf("state file still open after the failed start: %v", err)
	}
	st.Close()
}

// freePort returns a loopback address whose port was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestSdNotify: with NOTIFY_SOCKET set, serve tells the service manager
// READY=1 once it listens, RELOADING=1 then READY=1 around a SIGHUP and
// STOPPING=1 when SIGTERM starts the drain (Type=notify in the unit).
func TestSdNotify(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "notify")
	pc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	t.Setenv("NOTIFY_SOCKET", sock)
	next := func() string {
		t.Helper()
		pc.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 512)
		n, err := pc.Read(buf)
		if err != nil {
			t.Fatalf("no notification: %v", err)
		}
		return string(buf[:n])
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mailgate.yaml")
	y := fmt.Sprintf("node: notify\nadmin:\n  listen: \"\"\nlisteners:\n  - name: imap\n    protocol: imap\n    listen: %s\n    backend:\n      address: 127.0.0.1:1\n", freePort(t))
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := configs.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- run(cfg, path, nil) }()
	if got := next(); !strings.HasPrefix(got, "READY=1\n") {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	syscall.Kill(os.Getpid(), syscall.SIGHUP)
	if got := next(); got != "RELOADING=1" {
		t.Fatalf("on SIGHUP %q, want RELOADING=1", got)
	}
	if got := next(); got != "READY=1" {
		t.Fatalf("after the reload %q, want READY=1", got)
	}
	syscall.Kill(os.Getpid(), syscall.SIGTERM)
	if got := next(); got != "STOPPING=1" {
		t.Fatalf("on SIGTERM %q, want STOPPING=1", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run = %v", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("run did not return after SIGTERM")
	}
}
