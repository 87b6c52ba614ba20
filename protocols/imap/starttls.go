package imap

import "fmt"

// startTLS answers the client's STARTTLS itself (RFC 9051 §6.2.1); it is
// never forwarded. Anything the client pipelined behind the command is thrown
// away by Conn.StartTLSServer (CVE-2011-0411, docs/protocols.md §9.1): those bytes
// were sent in the clear and must not run inside the TLS session.
func (ss *session) startTLS(cmd *command) error {
	if !newArgScanner(cmd).end() {
		return ss.answer(badCommand(cmd.tag, "STARTTLS takes no arguments"))
	}
	if ss.ps.ClientTLS || ss.ps.ClientStartTLS == nil {
		// RFC 9051 §6.2.1: BAD after TLS or where TLS is not offered.
		return ss.answer(badCommand(cmd.tag, "STARTTLS not available"))
	}
	if err := ss.reply(cmd.tag, "OK", "Begin TLS negotiation now"); err != nil {
		return err
	}
	if err := ss.UpgradeClient(ss.ps.ClientStartTLS, "STARTTLS"); err != nil {
		return fmt.Errorf("imap: client TLS handshake: %w", err)
	}
	ss.ps.ClientTLS = true
	ss.Observer.TLSStarted()
	ss.Log.Debug("client STARTTLS done")
	return nil
}
