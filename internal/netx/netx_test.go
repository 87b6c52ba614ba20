package netx

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/netip"
	"testing"
	"testing/iotest"
	"time"
)

// bytesConn is a net.Conn reading a fixed input, in pieces of at most
// chunk bytes when chunk > 0 (a client that writes byte by byte).
type bytesConn struct {
	net.Conn
	r     io.Reader
	chunk int
}

func newBytesConn(in []byte, chunk int) *bytesConn {
	var r io.Reader = bytes.NewReader(in)
	if chunk == 1 {
		r = iotest.OneByteReader(r)
	}
	return &bytesConn{r: r, chunk: chunk}
}

func (b *bytesConn) Read(p []byte) (int, error) {
	if b.chunk > 1 && len(p) > b.chunk {
		p = p[:b.chunk]
	}
	return b.r.Read(p)
}
func (b *bytesConn) SetReadDeadline(time.Time) error { return nil }
func (b *bytesConn) RemoteAddr() net.Addr            { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

const v1 = "PROXY TCP4 192.0.2.7 127.0.0.1 5555 1143\r\n"

var v2 = "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c" + "\xc0\x00\x02\x07\x7f\x00\x00\x01\x15\xb3\x04\x77"

// TestGuardConn: a signature is refused however it is split across reads;
// a prefix of one that turns out to be something else is delivered whole,
// byte for byte (the old first-read check refused a lone "P").
func TestGuardConn(t *testing.T) {
	for _, tt := range []struct {
		name, in string
		refused  bool
	}{
		{"v1", v1, true},
		{"v2", v2, true},
		{"IMAP command", "a1 LOGIN alice secret\r\n", false},
		{"starts like v1", "PROXI a1 NOOP\r\n", false},
		{"starts like v2", "\r\n\r\nhello\r\n", false},
		{"lone P then EOF", "P", false},
		{"empty", "", false},
	} {
		for _, chunk := range []int{0, 1, 3} {
			g := &GuardConn{Conn: newBytesConn([]byte(tt.in), chunk)}
			got, err := io.ReadAll(g)
			if tt.refused {
				if !errors.Is(err, ErrUntrustedProxyHeader) || len(got) != 0 {
					t.Errorf("%s (chunk %d): read %q, %v; want nothing and ErrUntrustedProxyHeader", tt.name, chunk, got, err)
				}
				continue
			}
			if err != nil || string(got) != tt.in {
				t.Errorf("%s (chunk %d): read %q, %v; want %q", tt.name, chunk, got, err, tt.in)
			}
			if !g.Passed() {
				t.Errorf("%s (chunk %d): Passed() = false after everything was read", tt.name, chunk)
			}
		}
	}
}

func TestCheckUntrusted(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want error
	}{
		{v1 + "GET / HTTP/1.1\r\n", ErrUntrustedProxyHeader},
		{v2, ErrUntrustedProxyHeader},
		{"GET / HTTP/1.1\r\n", nil},
		{"POST / HTTP/1.1\r\n", nil},
		{"\x16\x03\x01\x02\x00", nil}, // a TLS ClientHello
		{"PROX", io.EOF},              // closed before it could be told apart
	} {
		c := newBytesConn([]byte(tt.in), 1)
		br := bufio.NewReader(c)
		err := CheckUntrusted(c, br, time.Second)
		if !errors.Is(err, tt.want) {
			t.Errorf("CheckUntrusted(%q) = %v, want %v", tt.in, err, tt.want)
		}
		if tt.want == nil {
			if rest, _ := io.ReadAll(br); string(rest) != tt.in {
				t.Errorf("CheckUntrusted(%q) consumed bytes: %q left", tt.in, rest)
			}
		}
	}
}

func TestReadProxyHeader(t *testing.T) {
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	for _, tt := range []struct {
		in      string
		require bool
		want    string
		err     error
	}{
		{v1 + "a NOOP\r\n", true, "192.0.2.7:5555", nil},
		{v2 + "a NOOP\r\n", true, "192.0.2.7:5555", nil},
		{"a NOOP\r\n", false, "127.0.0.1:1", nil},
		{"a NOOP\r\n", true, "127.0.0.1:1", ErrMissingProxyHeader},
	} {
		c := newBytesConn([]byte(tt.in), 0)
		br := bufio.NewReader(c)
		got, err := ReadProxyHeader(c, br, peer, tt.require, time.Second)
		if !errors.Is(err, tt.err) || got.String() != tt.want {
			t.Errorf("ReadProxyHeader(%q, require %v) = %v, %v; want %s, %v", tt.in, tt.require, got, err, tt.want, tt.err)
		}
		if tt.err == nil {
			if rest, _ := io.ReadAll(br); string(rest) != "a NOOP\r\n" {
				t.Errorf("after the header %q is left, want the command", rest)
			}
		}
	}
}

func TestPrefixConnRemoteAddr(t *testing.T) {
	c := newBytesConn([]byte("x"), 0)
	p := &PrefixConn{Conn: c, R: bufio.NewReader(c), Remote: netip.MustParseAddrPort("192.0.2.7:5555")}
	if got := p.RemoteAddr().String(); got != "192.0.2.7:5555" {
		t.Errorf("RemoteAddr() = %s, want the header's client", got)
	}
	p.Remote = netip.AddrPort{}
	if got := p.RemoteAddr().String(); got != "127.0.0.1:1" {
		t.Errorf("RemoteAddr() without Remote = %s, want the socket's", got)
	}
}

// TestServe: every connection reaches handle; a handle that says stop ends
// Serve with false, a closed listener with true.
func TestServe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan bool)
	got := 0
	go func() {
		done <- Serve(ln, nil, "test", func(c net.Conn) bool { c.Close(); got++; return got < 2 })
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
	if ok := <-done; ok || got != 2 {
		t.Errorf("Serve = %v after %d connections, want false after 2", ok, got)
	}
	go func() { done <- Serve(ln, nil, "test", func(c net.Conn) bool { return true }) }()
	ln.Close()
	if ok := <-done; !ok {
		t.Error("Serve = false after the listener closed, want true")
	}
}

// FuzzProxyHeader feeds arbitrary bytes to the trusted-peer header reader
// and to both untrusted-peer checks: no panic, no hang; an accepted header
// names a valid client; the guard refuses exactly the inputs that start
// with a whole signature and otherwise delivers the input unchanged, in any
// split; CheckUntrusted agrees with it.
func FuzzProxyHeader(f *testing.F) {
	for _, s := range []string{v1 + "a CAPABILITY\r\n", "PROXY TCP6 2001:db8::1 ::1 5555 1143\r\n", "PROXY UNKNOWN\r\n",
		"PROXY TCP4 999.0.0.1 127.0.0.1 5555 1143\r\n", v2, "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "a LOGIN x y\r\n", "PROX"} {
		f.Add([]byte(s), uint8(0))
	}
	peer := netip.MustParseAddrPort("127.0.0.1:1")
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		for _, require := range []bool{true, false} {
			c := newBytesConn(in, 0)
			got, err := ReadProxyHeader(c, bufio.NewReaderSize(c, 4096), peer, require, time.Second)
			if err == nil && !got.IsValid() {
				t.Fatalf("accepted %q with an invalid address", in)
			}
		}
		header := bytes.HasPrefix(in, sigV1) || bytes.HasPrefix(in, sigV2)
		g := &GuardConn{Conn: newBytesConn(in, int(chunk%5))}
		out, err := io.ReadAll(g)
		switch {
		case header && (!errors.Is(err, ErrUntrustedProxyHeader) || len(out) > 0):
			t.Fatalf("guard let %q through (%v)", out, err)
		case !header && (err != nil || !bytes.Equal(out, in)):
			t.Fatalf("guard changed %q into %q (%v)", in, out, err)
		}
		c := newBytesConn(in, 1)
		cerr := CheckUntrusted(c, bufio.NewReader(c), time.Second)
		if header != errors.Is(cerr, ErrUntrustedProxyHeader) {
			t.Fatalf("CheckUntrusted(%q) = %v, guard says header=%v", in, cerr, header)
		}
	})
}
