package xmpp

import (
	"fmt"

	"github.com/mailgate/mailgate/protocols"
)

// startTLS answers the client's <starttls/> itself (RFC 6120 §5.4); it is
// never forwarded. Anything the client pipelined behind it is thrown away by
// Conn.StartTLSServer (CVE-2011-0411, docs/protocols.md §9.1): those bytes were
// sent in the clear and must not count inside the TLS session.
//
// The client then opens a new stream over TLS, but the backend keeps its
// first one: it never sees a restart it did not cause. mailgate answers the
// new stream itself with the backend's stream id and the features it
// already holds, rewritten for the now secure link.
func (ss *session) startTLS() error {
	if ss.ps.ClientTLS || ss.ps.ClientStartTLS == nil {
		// RFC 6120 §5.4.2.2: <failure/>, then the stream is closed.
		ss.out("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
		ss.Log.Info("STARTTLS refused", "outcome", "closed")
		return &streamErr{err: protocols.ErrClientProtocol}
	}
	ss.out("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	if err := ss.Flush(); err != nil {
		return err
	}
	if err := ss.UpgradeClient(ss.ps.ClientStartTLS, "STARTTLS"); err != nil {
		ss.Told = true // the link is neither plaintext nor TLS any more
		return fmt.Errorf("xmpp: client TLS handshake: %w", err)
	}
	ss.ps.ClientTLS = true
	ss.Observer.TLSStarted()
	ss.Log.Debug("client STARTTLS done")
	// RFC 6120 §5.4.3.3: a new stream; the parser starts over.
	ss.headerSent = false
	if err := ss.readClientHeader(false); err != nil {
		return err
	}
	return ss.sendHeaderAndFeatures()
}
