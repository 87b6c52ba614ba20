package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"

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
