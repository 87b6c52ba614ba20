package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// Defaults of ListenerOptions and Backend, for a config to take.
const (
	DefaultDialTimeout = 5 * time.Second
	// DefaultIdleTimeout closes a relayed session silent both ways for an
	// hour (IMAP IDLE is re-issued within 29 minutes). A zero
	// ListenerOptions.IdleTimeout never closes one.
	DefaultIdleTimeout = time.Hour
)

// Backend says how to reach the mail server behind a listener.
type Backend struct {
	Address string
	// TLS toward the backend: with TLSStartTLS the protocol handler
	// upgrades the link.
	TLS       protocols.TLSMode
	TLSConfig *tls.Config // for starttls and implicit
	// ClientAddress: "none", "proxy-v2", or a protocol-level method the
	// handler applies itself ("imap-id").
	ClientAddress string
	DialTimeout   time.Duration
}

// dial connects to the backend and, as configured, sends the PROXY v2
// header and runs implicit TLS.
func (b *Backend) dial(ctx context.Context, client, local netip.AddrPort) (net.Conn, error) {
	timeout := b.DialTimeout
	if timeout <= 0 {
		timeout = DefaultDialTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// No keep-alive toward the backend (HAProxy and nginx do not probe
	// servers by default either): the backend is near, and mail servers
	// time idle sessions out themselves. Clients are probed.
	d := net.Dialer{KeepAlive: -1}
	// Not Dialer.DialTCP with a zero local address: that binds to port 0
	// before connecting, so the port is chosen without the destination and
	// the ephemeral range runs out at a few thousand logins a second.
	c, err := d.DialContext(ctx, "tcp", b.Address)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	if b.ClientAddress == "proxy-v2" {
		if err := netx.WriteProxyV2(c, client, local); err != nil {
			c.Close()
			return nil, err
		}
	}
	if b.TLS == protocols.TLSImplicit {
		tc := protocols.TLSClient(c, b.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	c.SetDeadline(time.Time{})
	return c, nil
}
