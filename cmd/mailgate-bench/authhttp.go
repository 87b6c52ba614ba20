package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// The nginx mail auth_http endpoint (nginx.org ngx_mail_auth_http_module):
// nginx asks it once per login with Auth-User, Auth-Pass (both URL-escaped),
// Auth-Protocol and friends in request headers, and connects to the
// Auth-Server:Auth-Port of an OK answer, replaying the login there. The
// endpoint checks the password the way the backend does, so a wrong password
// never reaches the backend through nginx either.

// authHandler answers nginx's auth requests for one backend.
type authHandler struct {
	server string // IP (nginx wants an address, not a name)
	port   string
}

func newAuthHandler(backend string) (*authHandler, error) {
	host, port, err := net.SplitHostPort(backend)
	if err != nil {
		return nil, fmt.Errorf("authhttp -backend %q: %w", backend, err)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("authhttp -backend %q: nginx needs an IP address in Auth-Server", backend)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return nil, fmt.Errorf("authhttp -backend %q: bad port", backend)
	}
	if err := checkLoopback(backend); err != nil {
		return nil, err
	}
	return &authHandler{server: host, port: port}, nil
}

func (h *authHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	pass, err := url.PathUnescape(r.Header.Get("Auth-Pass"))
	hd := w.Header()
	if err != nil || pass != benchPassword || r.Header.Get("Auth-User") == "" {
		hd.Set("Auth-Status", "Invalid login or password")
		hd.Set("Auth-Wait", "0")
	} else {
		hd.Set("Auth-Status", "OK")
		hd.Set("Auth-Server", h.server)
		hd.Set("Auth-Port", h.port)
	}
	w.WriteHeader(http.StatusOK)
}

func cmdAuthHTTP(args []string) error {
	fs := flag.NewFlagSet("authhttp", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:30010", "listen address (loopback)")
	backend := fs.String("backend", "127.0.0.1:30001", "IP:PORT nginx is sent to after a good login")
	fs.Parse(args)
	h, err := newAuthHandler(*backend)
	if err != nil {
		return err
	}
	ln, err := listenLoopback(*listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(os.Stderr, "authhttp: ", log.LstdFlags)}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
		<-sig
		srv.Close()
	}()
	log.Printf("authhttp: listening on %s, sending nginx to %s", ln.Addr(), *backend)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
