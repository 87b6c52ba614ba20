package pop3

import (
	"bytes"
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// Capability rewriting (docs/protocols.md §0.1, §3.2). The backend's CAPA
// describes its link to the proxy; the client must see the truth about its
// own link, and nothing the proxy cannot honour.

// capPolicy says what the client link needs.
type capPolicy struct {
	offerSTLS     bool // add STLS: plain client link and STLS configured
	loginDisabled bool // hide USER and cleartext SASL (TLS required, plain link)
}

// saslMenu lists the mechanisms the client may see (docs/protocols.md
// §0.1, §1.7, §1.8).
func (p capPolicy) saslMenu() protocols.SASLMenu {
	return protocols.SASLMenu{Offer: protocols.SASLOffer{HideCleartext: p.loginDisabled}}
}

// rewriteCapa applies the policy to the lines of a CAPA answer (RFC 2449
// §5: one capability per line, a tag and its parameters), keeping the
// backend's order and spelling for what it keeps. STLS is appended when the
// client link may use it.
func rewriteCapa(lines [][]byte, p capPolicy) [][]byte {
	out := make([][]byte, 0, len(lines)+1)
	for _, l := range lines {
		f := bytes.Fields(l)
		if len(f) == 0 {
			continue
		}
		switch strings.ToUpper(string(f[0])) {
		case "STLS":
			continue // re-added below when true of the client link
		case "USER":
			if p.loginDisabled {
				continue
			}
		case "XCLIENT", "XFORWARD":
			continue // trusted-peer commands, never for clients (§0.1)
		case "SASL":
			mechs := []byte("SASL")
			menu := p.saslMenu()
			for _, m := range f[1:] {
				if menu.Add(string(m)) {
					mechs = append(mechs, ' ')
					mechs = append(mechs, m...)
				}
			}
			if len(mechs) == len("SASL") {
				continue // nothing left the client could use
			}
			l = mechs
		}
		out = append(out, l)
	}
	if p.offerSTLS {
		out = append(out, []byte("STLS"))
	}
	return out
}

// filterMechList applies the policy to the answer to a bare AUTH: one
// mechanism name per line (the RFC 1734 listing Dovecot and others send).
func filterMechList(lines [][]byte, p capPolicy) [][]byte {
	out := make([][]byte, 0, len(lines))
	menu := p.saslMenu()
	for _, l := range lines {
		f := bytes.Fields(l)
		if len(f) > 0 && menu.Add(string(f[0])) {
			out = append(out, l)
		}
	}
	return out
}

// xclientCode is the response code Dovecot puts first in its greeting to
// peers in login_trusted_networks, inviting them to send XCLIENT.
var xclientCode = []byte("[XCLIENT]")

// rewriteGreeting returns the greeting for the client: the backend's, minus
// the "[XCLIENT]" code. A client that saw it could not use it (XCLIENT is
// never forwarded), but it should not learn the proxy is trusted either.
// Everything else, the APOP timestamp in particular, is kept byte for byte.
func rewriteGreeting(line []byte) []byte {
	if !hasWord(line, "+OK") {
		return line
	}
	rest := line[len("+OK"):]
	t := bytes.TrimPrefix(rest, []byte(" "))
	if len(t) < len(xclientCode) || !bytes.EqualFold(t[:len(xclientCode)], xclientCode) {
		return line
	}
	t = bytes.TrimPrefix(t[len(xclientCode):], []byte(" "))
	if len(t) == 0 {
		return []byte("+OK")
	}
	return append([]byte("+OK "), t...)
}

// apopTimestamp reports whether a greeting carries an APOP timestamp, a
// msg-id such as <1896.697170952@dbc.mtview.ca.us> (RFC 1939 §7).
func apopTimestamp(line []byte) bool {
	open := bytes.LastIndexByte(line, '<')
	if open < 0 {
		return false
	}
	end := bytes.IndexByte(line[open:], '>')
	if end < 0 {
		return false
	}
	id := line[open+1 : open+end]
	at := bytes.IndexByte(id, '@')
	return at > 0 && at < len(id)-1 && bytes.IndexAny(id, " \t<") < 0
}
