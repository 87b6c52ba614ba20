package pop3

import "fmt"

// startTLS answers the client's STLS itself (RFC 2595 §4); it is never
// forwarded. Anything the client pipelined behind the command is thrown
// away by Conn.StartTLSServer (CVE-2011-0411, docs/protocols.md §9.1): those
// bytes were sent in the clear and must not run inside the TLS session. A
// user name given before TLS is forgotten with the rest of the plaintext
// dialogue.
func (ss *session) startTLS(cmd command) error {
	if cmd.hasArgs {
		return ss.badCmd("STLS takes no arguments")
	}
	if ss.ps.ClientTLS {
		return ss.reply("-ERR Command not permitted when TLS active")
	}
	if ss.ps.ClientStartTLS == nil {
		return ss.reply("-ERR STLS not available")
	}
	if err := ss.reply("+OK Begin TLS negotiation"); err != nil {
		return err
	}
	if err := ss.UpgradeClient(ss.ps.ClientStartTLS, "STLS"); err != nil {
		return fmt.Errorf("pop3: client TLS handshake: %w", err)
	}
	ss.ps.ClientTLS = true
	ss.forgetUser()
	ss.Observer.TLSStarted()
	ss.Log.Debug("client STLS done")
	return nil
}
