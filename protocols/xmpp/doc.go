// Package xmpp is mailgate's XMPP client-to-server front end: a
// protocols.Handler that runs stream negotiation (RFC 6120) between a client
// and a backend server up to SASL success, then hands the pair back for
// blind relay. Listeners are 5222-style (STARTTLS, RFC 6120 §5) or
// 5223-style direct TLS (XEP-0368), which the proxy terminates itself.
//
// Typical usage, by the proxy core:
//
//	h := xmpp.New(xmpp.Options{})
//	err := h.PreAuth(ctx, &protocols.Session{Client: c, Backend: b, ...})
//	if err == nil {
//		// authenticated: forward what either side already sent, then relay
//	}
//
// What PreAuth does:
//
//   - Reads the client's stream header (RFC 6120 §4.7; an XML declaration
//     may come first), then opens its own stream to the backend for the
//     same domain ('to') and reads the backend's header and features. With
//     Session.BackendStartTLS the backend link is upgraded first (§5.4; a
//     backend without <starttls/> is a hard error) and a new stream opened.
//   - Answers the client with the backend's stream id and the features
//     rewritten for the client's link (docs/protocols.md §0.1): <starttls/> only
//     while the client link is plain and STARTTLS is configured (with
//     <required/> when TLS is required for login); SASL mechanisms limited
//     to those the proxy can attribute (protocols.SASLOffer: PLAIN, LOGIN,
//     CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2, OAUTHBEARER, X-OAUTH2,
//     spelled in upper case), each once, never EXTERNAL or a channel-binding
//     *-PLUS (and so no XEP-0440 <sasl-channel-binding/>), cleartext ones
//     withheld while TLS is required; SASL2 (XEP-0388), in-band registration
//     (XEP-0077), legacy auth (XEP-0078), compression (XEP-0138) and
//     unknown features are withheld; informational ones pass.
//   - Answers <starttls/> itself with <proceed/>, discarding anything the
//     client pipelined behind it, and answers the client's new stream
//     itself from what it holds: the backend keeps its first stream and
//     never sees a restart it did not cause.
//   - Follows SASL (RFC 6120 §6.4, protocols.Dialogue.RelaySASL) far enough
//     to learn the user: PLAIN's authcid (and authzid, a bare JID), SCRAM's
//     n= (and a=), OAUTHBEARER's a=, X-OAUTH2's PLAIN-form authcid, and so
//     on; CRAM-MD5's challenge comes from the backend. A simple user name is the localpart
//     (§6.3.7) and gets the stream's domain. The gate is asked before the
//     credential leaves; a denial is a <failure/> (<account-disabled/>,
//     <temporary-auth-failure/> for the connection limit, <not-authorized/>
//     for a lockout) and the backend never sees the exchange.
//   - Relays challenges, responses, <abort/> and the verdict, rebuilt from
//     checked base64. <success/> (with its additional data, e.g. SCRAM's
//     v=) is reported to the Observer before the client reads it; then the
//     client's new stream header is forwarded to the backend as written
//     (less any whitespace in front of it, which strict servers refuse
//     before an XML declaration), the backend's new header goes to the
//     client as written, and its post-login features are rebuilt without
//     <starttls/> (it described the backend's link, and TLS may never
//     follow SASL, RFC 6120 §5.3.1); then PreAuth returns. A
//     <temporary-auth-failure/> from the backend is a temporary failure,
//     never a failed password.
//
// XML hardening (RFC 6120 §11, docs/protocols.md §5.5, §9.5): the handler reads
// both streams with its own tokenizer, which refuses comments, processing
// instructions, DTDs and entity references other than the five predefined
// ones (<restricted-xml/>), checks well-formedness and namespaces
// (<not-well-formed/>), and bounds the nesting depth, the size of a header
// or first-level element and the bytes of the whole pre-auth phase
// (<policy-violation/>). An entity is never expanded, so a "billion laughs"
// document costs nothing. Stanzas before authentication end the stream with
// <not-authorized/> (§4.9.3.12), other unknown elements with
// <unsupported-stanza-type/>.
//
// Implementation notes:
//
//   - The tokenizer only peeks past the token it returns, so after
//     <starttls/> the pipelined bytes are still in Client.R (and discarded),
//     and after the client's post-success header anything pipelined (the
//     resource binding) is still there for the proxy to forward.
//   - Nothing the client or the backend wrote is copied through before
//     login except the two stream headers of the restart: every element
//     sent either way is rebuilt from parsed values, so neither side can
//     smuggle markup to the other.
//   - Passwords, tokens and SASL data are never logged, at any level; error
//     texts are fixed strings. The handler's copies are zeroed once used.
//   - Limits.LoginTimeout is one deadline for the whole phase, on both
//     connections (<connection-timeout/> when it passes); context
//     cancellation moves it to the past. Limits.MaxLiteral bounds one
//     decoded SASL message, Limits.MaxBadCommands the recoverable protocol
//     errors (<failure/>s for malformed SASL) before <policy-violation/>.
//   - Refuse and Goodbye write stream errors; Goodbye declares the stream
//     prefix on <stream:error> itself, since after login the client's
//     stream is the one the backend opened. When the session is cancelled
//     before login, PreAuth makes sure the client has a stream header, so
//     the proxy's Goodbye lands in an open stream.
//   - There is no XMPP-level way to pass the client address; use PROXY v2
//     toward backends that take it (ejabberd does, Prosody does not).
package xmpp
