package webmail

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// closeWait bounds how long a closing side waits for the peer's close reply.
const closeWait = 2 * time.Second

type netDialer struct{ timeout time.Duration }

func (d *netDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return (&net.Dialer{Timeout: d.timeout, KeepAlive: 30 * time.Second}).DialContext(ctx, network, addr)
}

// RelayWebsocket dials the backend websocket at target first (so that a
// refusal reaches the client as an HTTP status), then upgrades the client
// and relays messages both ways, frame-aware: text and binary messages
// keep their type, pings and pongs are forwarded, and a close frame from
// either side is passed on with its code. A code received on stop closes
// the client with it (1008 for an administrator's drop, 1001 for shutdown)
// and the backend with 1001.
func (m *Webmail) RelayWebsocket(w http.ResponseWriter, r *http.Request, target *url.URL, hdr http.Header, opened func(), stop <-chan int) error {
	d := m.dialer
	d.Subprotocols = websocket.Subprotocols(r)
	hdr.Del("Sec-Websocket-Protocol") // the dialer writes the offered subprotocols
	ctx, cancel := context.WithTimeout(r.Context(), d.HandshakeTimeout)
	backend, resp, err := d.DialContext(ctx, target.String(), hdr)
	cancel()
	if err != nil {
		status := http.StatusBadGateway
		if resp != nil && resp.StatusCode >= 400 && resp.StatusCode < 500 {
			status = resp.StatusCode // the backend's refusal (401, 403) is the client's answer
		}
		http.Error(w, http.StatusText(status), status)
		if resp != nil {
			return fmt.Errorf("backend refused the websocket: %s", resp.Status)
		}
		return fmt.Errorf("backend websocket: %w", dialError(err))
	}
	respHdr := http.Header{}
	if p := backend.Subprotocol(); p != "" {
		respHdr.Set("Sec-Websocket-Protocol", p)
	}
	for _, c := range resp.Header.Values("Set-Cookie") {
		respHdr.Add("Set-Cookie", c)
	}
	up := websocket.Upgrader{
		ReadBufferSize:  4096,
		WriteBufferSize: 4096,
		// The backend checks Origin: it received the client's.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	client, err := up.Upgrade(w, r, respHdr)
	if err != nil {
		backend.Close()
		return err // Upgrade answered the client
	}
	opened()
	return relay(client, backend, stop)
}

// dialError drops the URL from a dial error (its query may carry a token).
func dialError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// relay copies messages both ways until one side closes or a code arrives
// on stop, then closes both connections.
func relay(client, backend *websocket.Conn, stop <-chan int) error {
	deadline := func() time.Time { return time.Now().Add(closeWait) }
	forwardControl := func(to *websocket.Conn, kind int) func(string) error {
		return func(data string) error {
			err := to.WriteControl(kind, []byte(data), deadline())
			if errors.Is(err, websocket.ErrCloseSent) {
				return nil
			}
			return err
		}
	}
	client.SetPingHandler(forwardControl(backend, websocket.PingMessage))
	client.SetPongHandler(forwardControl(backend, websocket.PongMessage))
	backend.SetPingHandler(forwardControl(client, websocket.PingMessage))
	backend.SetPongHandler(forwardControl(client, websocket.PongMessage))
	// A close frame from one side goes to the other with its code; the
	// closing side gets its close echoed (RFC 6455 §5.5.1).
	passClose := func(from, to *websocket.Conn) func(int, string) error {
		return func(code int, text string) error {
			to.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), deadline())
			from.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, ""), deadline())
			return nil
		}
	}
	client.SetCloseHandler(passClose(client, backend))
	backend.SetCloseHandler(passClose(backend, client))

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- copyMessages(backend, client) }()
	go func() { defer wg.Done(); errc <- copyMessages(client, backend) }()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()

	var first error
	select {
	case code := <-stop:
		client.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, closeText(code)), deadline())
		backend.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), deadline())
		first = fmt.Errorf("closed by the proxy with %d", code)
	case first = <-errc:
		var ce *websocket.CloseError
		if !errors.As(first, &ce) {
			// A connection broke without a close frame: tell the other
			// side, whichever it is (the broken one ignores it).
			msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "")
			client.WriteControl(websocket.CloseMessage, msg, deadline())
			backend.WriteControl(websocket.CloseMessage, msg, deadline())
		}
	}
	select {
	case <-done:
	case <-time.After(closeWait):
	}
	client.Close()
	backend.Close()
	<-done
	var ce *websocket.CloseError
	if errors.As(first, &ce) || errors.Is(first, io.EOF) {
		return nil
	}
	return first
}

func closeText(code int) string {
	switch code {
	case websocket.ClosePolicyViolation:
		return "dropped by the administrator"
	case websocket.CloseGoingAway:
		return "server shutting down"
	}
	return ""
}

// copyMessages streams messages from src to dst without buffering whole
// messages, keeping each message's type.
func copyMessages(dst, src *websocket.Conn) error {
	for {
		kind, r, err := src.NextReader()
		if err != nil {
			return err
		}
		w, err := dst.NextWriter(kind)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, r); err != nil {
			w.Close()
			return err
		}
		if err := w.Close(); err != nil {
			return err
		}
	}
}
