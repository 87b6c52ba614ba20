package httpmail

import (
	"net/http"
	"time"
)

// isWebsocket reports a websocket handshake (RFC 6455 §4.1).
func isWebsocket(r *http.Request) bool {
	return r.Method == http.MethodGet && headerHasToken(r.Header.Get("Upgrade"), "websocket") &&
		headerHasToken(r.Header.Get("Connection"), "upgrade")
}

// socketEntry is an open websocket; shutdown sends it 1001 (going away).
type socketEntry struct{ stop chan int }

// Websocket close codes (RFC 6455 §7.4.1).
const (
	closeGoingAway      = 1001
	closePolicyViolated = 1008
)

// serveWebsocket relays a webmail websocket: one live connection for as
// long as it is open (its start is the Duration the admin sees). A drop
// closes it with 1008, shutdown with 1001.
func (s *Server) serveWebsocket(w http.ResponseWriter, r *http.Request, st *reqState) {
	e := &socketEntry{stop: make(chan int, 1)}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		w.Header().Set("Retry-After", "5")
		s.writeErrorCode(w, r, st.rt, http.StatusServiceUnavailable, "shutdown", "The server is restarting. Try again shortly.")
		return
	}
	s.sockets[e] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.sockets, e)
		s.mu.Unlock()
	}()
	st.conn.SetDropFunc(func(string) {
		select {
		case e.stop <- closePolicyViolated:
		default:
		}
	})
	// No deadline cuts a websocket: it lives for hours, kept alive by its
	// own pings.
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	rc.SetWriteDeadline(time.Time{})
	w.Header().Set("Connection", "close") // only sent if the upgrade fails
	target := st.rt.targetURL(r, st.prefix, true)
	err := s.webmail.RelayWebsocket(w, r, target, s.websocketHeader(r, st), func() {
		st.status = http.StatusSwitchingProtocols
		s.authenticated(st)
	}, e.stop)
	if err != nil {
		if st.status == 0 {
			st.status = http.StatusBadGateway
		}
		s.log.Debug("websocket ended", "protocol", st.rt.Protocol, "user", st.user, "client", st.client, "err", err)
	}
}

// closeSockets asks every open websocket to close with code.
func (s *Server) closeSockets(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for e := range s.sockets {
		select {
		case e.stop <- code:
		default:
		}
	}
}
