package protocols

// Which SASL mechanisms a client may be offered and may use, for all four
// stream protocols (docs/protocols.md §0.1): the capability rewriters
// (IMAP CAPABILITY, POP3 CAPA and bare AUTH, SMTP EHLO, XMPP
// <stream:features/>) and the login commands ask the same question here.

import (
	"errors"
	"strings"
)

// ErrSASLNeedsTLS is returned by SASLOffer.Exchange for a cleartext
// mechanism while those are hidden.
var ErrSASLNeedsTLS = errors.New("sasl: mechanism not allowed before TLS")

// SASLCleartext reports whether mechanism mech (any case) hands over a
// reusable secret: a password (PLAIN, LOGIN) or a bearer token (XOAUTH2,
// OAUTHBEARER, X-OAUTH2).
func SASLCleartext(mech string) bool {
	switch strings.ToUpper(mech) {
	case SASLPlain, SASLLogin, SASLXOAuth2, SASLXOAuth2XMPP, SASLOAuthBearer:
		return true
	}
	return false
}

// SASLOffer is the rule for one client link. A mechanism may be offered
// when the proxy can follow it far enough to learn the user before the
// credential leaves (NewSASLExchange), except EXTERNAL, whose identity is
// the client certificate that ends at the proxy (docs/protocols.md §1.7),
// and, with HideCleartext, the cleartext ones. *-PLUS never passes:
// channel binding cannot survive TLS termination (§1.8); neither do
// GSSAPI, DIGEST-MD5, NTLM or unknown names.
type SASLOffer struct {
	// HideCleartext: TLS is required for login and the client link is
	// still plain.
	HideCleartext bool
}

// Exchange starts following mech (any case) for a client that asked for
// it: ErrSASLMechanism when it may never be offered, ErrSASLNeedsTLS when
// it is cleartext and those are hidden.
func (o SASLOffer) Exchange(mech string) (*SASLExchange, error) {
	m, err := o.check(mech)
	if err != nil {
		return nil, err
	}
	return &SASLExchange{mech: m}, nil
}

// Offers reports whether a client may be shown mech.
func (o SASLOffer) Offers(mech string) bool {
	_, err := o.check(mech)
	return err == nil
}

func (o SASLOffer) check(mech string) (string, error) {
	m, ok := saslName(mech)
	switch {
	case !ok || m == SASLExternal:
		return "", ErrSASLMechanism
	case o.HideCleartext && SASLCleartext(m):
		return "", ErrSASLNeedsTLS
	}
	return m, nil
}

// Filter returns the mechanisms of list the client may be shown, in their
// order and spelling, each once.
func (o SASLOffer) Filter(list []string) []string {
	menu := SASLMenu{Offer: o}
	var out []string
	for _, m := range list {
		if menu.Add(m) {
			out = append(out, m)
		}
	}
	return out
}

// SASLMenu builds one list of mechanisms for a client, from a backend's
// list read in order.
type SASLMenu struct {
	Offer  SASLOffer
	listed []string
}

// Add reports whether mech goes on the list: the offer allows it and it is
// not listed yet (names compare without case).
func (m *SASLMenu) Add(mech string) bool {
	if !m.Offer.Offers(mech) {
		return false
	}
	for _, l := range m.listed {
		if strings.EqualFold(l, mech) {
			return false
		}
	}
	m.listed = append(m.listed, mech)
	return true
}

// SASLLogName returns mech as a log line may name it: upper case when it
// is a mechanism name the proxy knows, attributable or not, else "other".
// A client confused about an exchange may send its password where the
// mechanism goes.
func SASLLogName(mech string) string {
	m := strings.ToUpper(mech)
	if _, ok := saslName(strings.TrimSuffix(m, "-PLUS")); ok {
		return m
	}
	switch m {
	case "GSSAPI", "GS2-KRB5", "DIGEST-MD5", "NTLM", "ANONYMOUS", "SCRAM-SHA-512", "SCRAM-SHA-512-PLUS":
		return m
	}
	return "other"
}
