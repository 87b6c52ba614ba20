package imap

import (
	"bytes"
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// Capability rewriting (docs/protocols.md §0.1, §2.3). The backend describes its
// link to the proxy; the client must see the truth about its own link, and
// nothing that would let a relayed session change user or that the proxy
// cannot honour.

// capPolicy says what the client link needs.
type capPolicy struct {
	offerStartTLS bool // add STARTTLS: plain client link and STARTTLS configured
	loginDisabled bool // add LOGINDISABLED, hide cleartext mechanisms (RFC 9051 §6.2.3)
}

// rewriteCaps applies the policy to a backend capability list, keeping the
// backend's order and spelling for what it keeps.
func rewriteCaps(caps []string, p capPolicy) []string {
	out := make([]string, 0, len(caps)+2)
	mechs := protocols.SASLMenu{Offer: protocols.SASLOffer{HideCleartext: p.loginDisabled}}
	for _, c := range caps {
		u := strings.ToUpper(c)
		switch {
		case u == "STARTTLS", u == "LOGINDISABLED":
			continue // re-added below when true of the client link
		case u == "UNAUTHENTICATE":
			continue // RFC 8437: would let a relayed session change user
		case strings.HasPrefix(u, "AUTH="):
			if !mechs.Add(u[len("AUTH="):]) {
				continue // docs/protocols.md §0.1, §1.7, §1.8
			}
		}
		out = append(out, c)
	}
	if p.offerStartTLS {
		out = append(out, "STARTTLS")
	}
	if p.loginDisabled {
		out = append(out, "LOGINDISABLED")
	}
	return out
}

// capsOf returns the capability list a response carries: "* CAPABILITY ..."
// or a "[CAPABILITY ...]" response code in any status response.
func capsOf(r *response) ([]string, bool) {
	switch {
	case r.status != "" && r.code == "CAPABILITY":
		return fields(r.codeArgs()), true
	case r.kind == respUntagged && r.status == "" && r.keyword == "CAPABILITY":
		return fields(r.line[len("* CAPABILITY"):]), true
	}
	return nil, false
}

func fields(b []byte) []string {
	f := bytes.Fields(b)
	out := make([]string, len(f))
	for i, w := range f {
		out[i] = string(w)
	}
	return out
}

// rewriteResponse returns the bytes to send the client for r: the raw
// response, or its first line with the capability list rewritten.
func rewriteResponse(r *response, p capPolicy) []byte {
	caps, ok := capsOf(r)
	if !ok || len(r.raw) != len(r.line)+2 {
		return r.raw // no capabilities, or a multi-line response (not a valid CAPABILITY)
	}
	list := strings.Join(rewriteCaps(caps, p), " ")
	var b []byte
	if r.status != "" {
		b = append(b, r.line[:r.codeAt]...)
		b = append(b, "[CAPABILITY "...)
		b = append(b, list...)
		b = append(b, r.line[r.codeEnd:]...)
	} else {
		b = append(b, "* CAPABILITY "...)
		b = append(b, list...)
	}
	return append(b, '\r', '\n')
}
