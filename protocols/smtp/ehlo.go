package smtp

import (
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// EHLO replies (RFC 5321 §4.1.1.1): the first line greets, every further
// line is "keyword [params]". The backend's list describes the backend's
// link to the proxy; the client must see the truth about its own link
// (docs/protocols.md §0.1), and nothing the proxy cannot honour.

// ehloInfo is what the handler learns from the backend's EHLO reply.
type ehloInfo struct {
	mechs       []string // AUTH mechanisms offered (upper-case), AUTH and AUTH= lines together
	startTLS    bool
	xclient     bool
	xclientArgs []string // attribute names listed after XCLIENT (upper-case)
}

// parseEHLO reads the extension lines of a 250 EHLO reply.
func parseEHLO(r *reply) ehloInfo {
	var info ehloInfo
	for _, line := range r.lines[1:] {
		kw, params := splitKeyword(line)
		switch {
		case kw == "STARTTLS":
			info.startTLS = true
		case kw == "XCLIENT":
			info.xclient = true
			info.xclientArgs = upperFields(params)
		case kw == "AUTH" || strings.HasPrefix(kw, "AUTH="):
			for _, m := range authParams(kw, params) {
				if !containsFold(info.mechs, m) {
					info.mechs = append(info.mechs, m)
				}
			}
		}
	}
	return info
}

// offers reports whether the backend listed mechanism m.
func (i ehloInfo) offers(m string) bool { return containsFold(i.mechs, m) }

// capPolicy says what the client may see.
type capPolicy struct {
	clientTLS     bool // the client link is TLS
	offerStartTLS bool // client link plain and STARTTLS configured
	hideAuth      bool // mx role, or TLS required for login on a plain link
}

// rewriteEHLO returns the reply the client gets for a 250 EHLO reply from
// the backend. The greeting line is kept; the last line ends in "250 " as
// RFC 5321 §4.2.1 requires, whatever was removed.
func rewriteEHLO(r *reply, p capPolicy) *reply {
	out := &reply{code: r.code, lines: []string{r.text()}}
	for _, line := range r.lines[1:] {
		kw, params := splitKeyword(line)
		switch {
		case kw == "STARTTLS", kw == "XCLIENT", kw == "XFORWARD":
			continue
		case kw == "REQUIRETLS" && !p.clientTLS:
			// RFC 8689: the option is only valid on a TLS session; a
			// backend offering it speaks of its own link to the proxy.
			continue
		case kw == "AUTH" || strings.HasPrefix(kw, "AUTH="):
			if p.hideAuth {
				continue
			}
			mechs := attributableMechs(authParams(kw, params))
			if len(mechs) == 0 {
				continue
			}
			sep := " "
			if kw != "AUTH" {
				sep = "=" // legacy "AUTH=PLAIN LOGIN"
			}
			line = line[:len("AUTH")] + sep + strings.Join(mechs, " ")
		}
		out.lines = append(out.lines, line)
	}
	if p.offerStartTLS {
		out.lines = append(out.lines, "STARTTLS")
	}
	return out
}

// splitKeyword returns the upper-cased keyword of an EHLO line and the rest.
func splitKeyword(line string) (kw, params string) {
	kw, params, _ = strings.Cut(line, " ")
	return strings.ToUpper(kw), params
}

// authParams returns the mechanisms of "AUTH m1 m2" or legacy "AUTH=m1 m2".
func authParams(kw, params string) []string {
	var ms []string
	if first, ok := strings.CutPrefix(kw, "AUTH="); ok && first != "" {
		ms = append(ms, first)
	}
	return append(ms, upperFields(params)...)
}

// attributableMechs keeps the mechanisms a client may be shown, each once
// (protocols.SASLOffer; docs/protocols.md §0.1, §1.7, §1.8). Cleartext ones
// need no hiding here: while TLS is required on a plain link, AUTH is
// hidden whole (capPolicy.hideAuth).
func attributableMechs(ms []string) []string { return protocols.SASLOffer{}.Filter(ms) }

// attributable reports whether a client may be shown mechanism m.
func attributable(m string) bool { return protocols.SASLOffer{}.Offers(m) }

func upperFields(s string) []string {
	f := strings.Fields(s)
	for i := range f {
		f[i] = strings.ToUpper(f[i])
	}
	return f
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}
