package smtp

import "fmt"

// startTLS answers the client's STARTTLS itself (RFC 3207 §4); it is never
// forwarded. Anything the client pipelined behind the command is thrown
// away by Conn.StartTLSServer (CVE-2011-0411, docs/protocols.md §9.1): those
// bytes were sent in the clear and must not run inside the TLS session.
// Afterwards the session is back to just after the greeting (RFC 3207
// §4.2): the client must say EHLO again before AUTH or mail.
func (ss *session) startTLS(cmd command) error {
	switch {
	case len(cmd.arg) != 0:
		return ss.reject(501, "5.5.4", "Syntax: STARTTLS")
	case ss.ps.ClientTLS:
		return ss.reject(503, "5.5.1", "Error: TLS already active")
	case ss.ps.ClientStartTLS == nil:
		return ss.reject(502, "5.5.1", "Error: command not implemented")
	}
	ss.outReply(newReply(220, "2.0.0 Ready to start TLS"))
	if err := ss.Flush(); err != nil {
		return err
	}
	// From here the link is neither plain nor TLS: nothing more may be
	// written in the clear, whatever happens.
	ss.Told = true
	if err := ss.UpgradeClient(ss.ps.ClientStartTLS, "STARTTLS"); err != nil {
		return fmt.Errorf("smtp: client TLS handshake: %w", err)
	}
	ss.Told = false
	ss.ps.ClientTLS = true
	ss.helo, ss.esmtp, ss.ehlo = "", false, ehloInfo{}
	ss.Observer.TLSStarted()
	ss.Log.Debug("client STARTTLS done")
	return nil
}
