package xmpp

import (
	"log/slog"
	"strings"

	"github.com/mailgate/mailgate/protocols"
)

// Stream features rewriting (docs/protocols.md §0.1, §1.8, §5.1). The backend's
// <stream:features/> describe the backend's link to the proxy and offer
// things the proxy cannot follow; the client must see the truth about its own
// link and only what the proxy honours before login.

// featurePolicy says what the client's link needs.
type featurePolicy struct {
	offerStartTLS bool // the client link is plain and STARTTLS is configured
	requireTLS    bool // TLS is required before a cleartext login
}

// attributable reports whether the client may be shown mechanism m at all
// (protocols.SASLOffer). RFC 6120 §6.3.3 names are upper case and compared
// as they are: "plain" is no PLAIN.
func attributable(m string) bool {
	return m == strings.ToUpper(m) && protocols.SASLOffer{}.Offers(m)
}

// infoFeatures are informational features passed through as the backend
// wrote them: they ask nothing of the client before login.
var infoFeatures = map[Name]bool{
	{"http://jabber.org/protocol/caps", "c"}:  true, // XEP-0115 entity capabilities
	{"urn:xmpp:features:rosterver", "ver"}:    true, // XEP-0237
	{"urn:xmpp:features:pre-approval", "sub"}: true, // RFC 6121 §3.4
	{"urn:xmpp:stream-limits:0", "limits"}:    true, // XEP-0478
}

// rewriteFeatures returns the <stream:features/> element for the client and
// the mechanisms it offers, in the backend's order:
//   - <starttls/> only while the client link is plain and STARTTLS is
//     configured, with <required/> when TLS is required for login; the
//     backend's own (about its link to the proxy) is dropped;
//   - <mechanisms/> filtered to what the proxy can attribute, cleartext ones
//     withheld while TLS is required, omitted when none is left;
//   - dropped: XEP-0440 <sasl-channel-binding/> (no *-PLUS is offered, so
//     no channel-binding type can be used), XEP-0388 SASL2
//     <authentication/>, XEP-0077 <register/>, XEP-0078 <auth/>, XEP-0138
//     <compression/>, and anything else the proxy does not know to be
//     informational, so that the client never tries a negotiation the proxy
//     would have to refuse.
func rewriteFeatures(f *Element, p featurePolicy, log *slog.Logger) (string, []string) {
	b := []byte("<stream:features>")
	if p.offerStartTLS {
		if p.requireTLS {
			b = append(b, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"...)
		} else {
			b = append(b, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"...)
		}
	}
	var mechs []string
	if f != nil {
		for _, c := range f.Children {
			switch {
			case c.Name == Name{nsTLS, "starttls"}:
			case c.Name == Name{nsSASL, "mechanisms"}:
				mechs = filterMechanisms(c, p)
				if len(mechs) == 0 {
					continue
				}
				b = append(b, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"...)
				for _, m := range mechs {
					b = append(b, "<mechanism>"...)
					b = append(b, m...)
					b = append(b, "</mechanism>"...)
				}
				b = append(b, "</mechanisms>"...)
			case infoFeatures[c.Name]:
				b = appendElement(b, c, nsClient)
			default:
				if log != nil {
					log.Debug("stream feature withheld from the client", "namespace", short(c.Name.Space), "element", short(c.Name.Local))
				}
			}
		}
	}
	b = append(b, "</stream:features>"...)
	return string(b), mechs
}

// filterMechanisms keeps the mechanisms of a <mechanisms/> element the
// client may be shown, each once.
func filterMechanisms(el *Element, p featurePolicy) []string {
	var out []string
	menu := protocols.SASLMenu{Offer: protocols.SASLOffer{HideCleartext: p.requireTLS}}
	for _, c := range el.Children {
		if c.Name != (Name{nsSASL, "mechanism"}) {
			continue
		}
		if m := strings.TrimSpace(c.Text); attributable(m) && menu.Add(m) {
			out = append(out, m)
		}
	}
	return out
}

// postAuthFeatures rebuilds the backend's <stream:features/> after login for
// the client: everything passes (resource binding, stream management,
// carbons, CSI, ...) except <starttls/>, which described the backend's link
// to the proxy and may not be offered once SASL is done (RFC 6120 §5.3.1:
// TLS comes before SASL, and never twice). The stream prefix is declared on
// the element, as it is on stream errors, so it reads right whatever prefix
// the backend's header bound.
func postAuthFeatures(f *Element) string {
	b := []byte("<stream:features xmlns:stream='" + nsStreams + "'>")
	for _, c := range f.Children {
		if c.Name == (Name{nsTLS, "starttls"}) {
			continue
		}
		b = appendElement(b, c, nsClient)
	}
	return string(append(b, "</stream:features>"...))
}
