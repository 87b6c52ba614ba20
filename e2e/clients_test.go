package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/protocols/protocoltest"
)

// pyClient is one run of a client script in testdata: imapc.py, popc.py or
// smtpc.py (Python's imaplib, poplib, smtplib). It prints one event per line;
// expect reads them in order.
type pyClient struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser
	trans *protocoltest.SyncBuffer // everything it printed, stdout and stderr
	done  chan struct{}
	idle  bool // imapc.py --then idle: it never reads stdin, so cleanup kills it

	mu     sync.Mutex
	lines  []string      // stdout lines so far
	eof    bool          // stdout ended
	notify chan struct{} // a line arrived or stdout ended (capacity 1)
	pos    int           // lines[:pos] were consumed by expect
}

// imapOpts are imapc.py's flags.
type imapOpts struct {
	Addr     string
	TLS      string // none, starttls (default), implicit
	CAFile   string // verify the server against it; empty: no verification
	Source   string // bind the client socket to this address (e.g. 127.0.0.2)
	ProxyV1  string // send a PROXY v1 header naming this client IP first
	User     string
	Password string
	Auth     string // login (default) or plain (AUTHENTICATE PLAIN)
	Then     string // none (default), list, hold, idle
}

func (o imapOpts) args() []string {
	a := connFlags(o.Addr, o.TLS, o.CAFile, o.Source)
	a = append(a, "--user", o.User, "--password", o.Password)
	a.add("--proxy-v1", o.ProxyV1)
	a.add("--auth", o.Auth)
	a.add("--then", o.Then)
	return a
}

// flags is a client script's command line. A flag with an empty value is
// left out: the script's default applies.
type flags []string

func (f *flags) add(flag, v string) {
	if v != "" {
		*f = append(*f, flag, v)
	}
}

// connFlags starts a command line with the flags every client script takes
// (clientlib.parser; the launcher adds --timeout).
func connFlags(addr, tls, cafile, source string) flags {
	a := flags{"--addr", addr}
	a.add("--tls", tls)
	a.add("--cafile", cafile)
	a.add("--source", source)
	return a
}

// python3 prefers Debian's interpreter: a python3 shim first on PATH (pyenv)
// costs a shell and a fork per start, which adds up on a loaded machine.
func python3() (string, error) {
	if _, err := os.Stat("/usr/bin/python3"); err == nil {
		return "/usr/bin/python3", nil
	}
	p, err := exec.LookPath("python3")
	if err != nil {
		return "", fmt.Errorf("python3 is not installed: %v", err)
	}
	return p, nil
}

// startPy starts imapc.py.
func startPy(t *testing.T, name string, o imapOpts) *pyClient {
	t.Helper()
	c := startPyClient(t, name, "imapc.py", o.args()...)
	c.idle = o.Then == "idle"
	return c
}

// startPyClient starts the client script testdata/<script> with args; the
// process is killed at cleanup if still running.
func startPyClient(t *testing.T, name, script string, args ...string) *pyClient {
	t.Helper()
	py, err := python3()
	if err != nil {
		t.Fatal(err)
	}
	// Every script takes --timeout; 40 s is under stepTimeout, so a stuck
	// socket shows as the script's own ERROR line.
	args = append([]string{filepath.Join("testdata", script)}, append(args, "--timeout", "40")...)
	c := &pyClient{t: t, name: name, trans: &protocoltest.SyncBuffer{}, done: make(chan struct{}), notify: make(chan struct{}, 1)}
	c.cmd = exec.Command(py, args...)
	// No __pycache__ in testdata: the scripts import clientlib.py.
	c.cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1", "PYTHONDONTWRITEBYTECODE=1")
	c.cmd.Stderr = c.trans
	c.cmd.WaitDelay = 5 * time.Second
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", script, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(c.trans, line)
			c.mu.Lock()
			c.lines = append(c.lines, line)
			c.mu.Unlock()
			c.wake()
		}
		io.Copy(io.Discard, stdout) // after a scan error: keep the pipe drained
		c.mu.Lock()
		c.eof = true
		c.mu.Unlock()
		c.wake()
		c.cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		c.stdin.Close() // hold mode: logs out, quits
		wait := 5 * time.Second
		if c.idle {
			wait = 0
		}
		select {
		case <-c.done:
		case <-time.After(wait):
			c.cmd.Process.Kill()
			<-c.done
		}
		if t.Failed() {
			t.Logf("%s %s transcript:\n%s", script, name, c.trans.String())
		}
	})
	return c
}

// expect returns the next line starting with prefix, skipping others. An
// ERROR line, the end of the output or stepTimeout fails the test.
func (c *pyClient) expect(prefix string) string {
	c.t.Helper()
	timer := time.NewTimer(stepTimeout)
	defer timer.Stop()
	for {
		c.mu.Lock()
		var line string
		have, eof := c.pos < len(c.lines), c.eof
		if have {
			line = c.lines[c.pos]
			c.pos++
		}
		c.mu.Unlock()
		switch {
		case have && strings.HasPrefix(line, prefix):
			return line
		case have && strings.HasPrefix(line, "ERROR"):
			c.t.Fatalf("%s: %s (while waiting for %q)", c.name, line, prefix)
		case have:
			continue
		case eof:
			c.t.Fatalf("%s: output ended while waiting for %q", c.name, prefix)
		}
		select {
		case <-c.notify:
		case <-timer.C:
			c.t.Fatalf("%s: no %q within %v", c.name, prefix, stepTimeout)
		}
	}
}

func (c *pyClient) wake() {
	select {
	case c.notify <- struct{}{}:
	default:
	}
}

// send writes one command line (hold mode: "noop", "logout").
func (c *pyClient) send(cmd string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, cmd+"\n"); err != nil {
		c.t.Fatalf("%s: writing %q: %v", c.name, cmd, err)
	}
}

// wait waits for the client to exit and wants status 0.
func (c *pyClient) wait() {
	c.t.Helper()
	select {
	case <-c.done:
	case <-time.After(stepTimeout):
		c.t.Fatalf("%s: still running after %v", c.name, stepTimeout)
	}
	if !c.cmd.ProcessState.Success() {
		c.t.Fatalf("%s exited with %v", c.name, c.cmd.ProcessState)
	}
}

// loginOnce runs a client with --then none and returns its LOGIN line.
func loginOnce(t *testing.T, name string, o imapOpts) string {
	t.Helper()
	c := startPy(t, name, o)
	line := c.expect("LOGIN ")
	c.wait()
	return line
}

// curl runs curl with a deadline; it returns the combined output and error.
func curl(t *testing.T, args ...string) (string, error) {
	t.Helper()
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("curl is not on PATH: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	args = append([]string{"--max-time", "40", "--silent", "--show-error"}, args...)
	out, err := exec.CommandContext(ctx, "curl", args...).CombinedOutput()
	return string(out), err
}

// whoLine is "alice@example.com 1 imap (1234) (127.0.0.2)" in doveadm who.
var whoLine = regexp.MustCompile(`^(\S+)\s+(\d+)\s+(\S+)\s+\(([^)]*)\)\s+\(([^)]*)\)`)

// doveadmWho returns the client IPs Dovecot sees per user for one service
// (imap, pop3), and doveadm's output.
func doveadmWho(t *testing.T, conf, service string) (map[string][]string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "doveadm", "-c", conf, "who").CombinedOutput()
	if err != nil {
		t.Fatalf("doveadm -c %s who: %v\n%s", conf, err, out)
	}
	ips := map[string][]string{}
	for _, line := range strings.Split(string(out), "\n") {
		m := whoLine.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil || m[3] != service {
			continue
		}
		ips[m[1]] = append(ips[m[1]], strings.Fields(m[5])...)
	}
	return ips, string(out)
}

// waitWho polls doveadm who until user's sessions of service come from
// exactly the IPs in want (none: the user has no session).
func waitWho(t *testing.T, conf, service, user string, want ...string) {
	t.Helper()
	var last string
	waitFor(t, fmt.Sprintf("doveadm who: %s %s from %v", user, service, want), func() bool {
		var ips map[string][]string
		ips, last = doveadmWho(t, conf, service)
		return sameSet(ips[user], want)
	}, func() string { return "last doveadm who:\n" + last })
}

func sameSet(a, b []string) bool {
	in := map[string]bool{}
	for _, x := range a {
		in[x] = true
	}
	if len(in) != len(b) {
		return false
	}
	for _, x := range b {
		if !in[x] {
			return false
		}
	}
	return true
}

// runCmd runs a command with a deadline and returns its combined output.
func runCmd(t *testing.T, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stepTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}
