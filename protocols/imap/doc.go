// Package imap is mailgate's IMAP front end: a protocols.Handler that runs the
// not-authenticated state of an IMAP4rev1/rev2 session (RFC 3501, RFC 9051)
// between a client and a backend, then hands the pair back for blind relay.
//
// Typical usage, by the proxy core:
//
//	h := imap.New(imap.Options{})
//	err := h.PreAuth(ctx, &protocols.Session{Client: c, Backend: b, ...})
//	if err == nil {
//		// authenticated: forward s.Client.R's buffered bytes, then relay
//	}
//
// What PreAuth does:
//
//   - Greets early (protocols.EarlyGreeter): once a backend has greeted OK
//     with the same greeting on two connections (from two client addresses
//     when a PROXY header tells the backend who the client is), the proxy
//     greets the next clients with it (the policy below applied for each
//     link) before it connects to the backend, and PreAuth then reads and
//     checks the backend's without passing it on. A greeting that changes
//     is confirmed anew; a backend that greets PREAUTH is never predicted (a
//     client already greeted is told BYE); a BYE greeting is passed on.
//   - Relays the backend greeting. PREAUTH is relayed and PreAuth returns nil
//     at once (no user known); BYE is relayed and ends the session. With
//     Session.BackendStartTLS the backend link is upgraded first (a PREAUTH
//     greeting or a missing STARTTLS is then a hard error), and with
//     Session.ClientAddrVia == "imap-id" an ID command carrying the client
//     address is sent with the handler's own tag and its answer swallowed.
//   - Rewrites capabilities wherever they appear (greeting code,
//     "* CAPABILITY", any "[CAPABILITY ...]" code): STARTTLS only while the
//     client link is plain and STARTTLS is configured; LOGINDISABLED, and no
//     cleartext AUTH= (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER, X-OAUTH2), only
//     when TLS is required for login and the link is plain; never
//     UNAUTHENTICATE, AUTH=EXTERNAL, *-PLUS or a mechanism the proxy cannot
//     attribute (protocols.SASLOffer), each mechanism once. SASL-IR is passed through as the
//     backend advertises it: the handler decodes an initial response itself
//     and forwards it as one only when the backend takes SASL-IR.
//   - Answers STARTTLS itself, discarding anything pipelined behind it.
//   - Parses LOGIN (atoms, quoted strings, both kinds of literal) and
//     AUTHENTICATE (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/-256, XOAUTH2,
//     OAUTHBEARER, X-OAUTH2, with or without initial response; the exchange
//     is protocols.Dialogue.RelaySASL's) far enough to learn the user, asks
//     the Gate, and only then lets the credential reach the backend. A
//     denied login is answered with NO by the handler.
//   - Relays the backend's verdict and reports it to the Observer.
//   - Forwards every other command for the backend to judge, and relays its
//     result; untagged data other than status, CAPABILITY and ID responses
//     is dropped before login. The client's own ID (RFC 2971) is forwarded
//     without its "x-*" fields, which backends may trust from the proxy's
//     address. UNAUTHENTICATE and COMPRESS are refused with BAD.
//
// Implementation notes:
//
//   - One command at a time. The handler reads exactly one client command
//     and does not read the next before the current one is answered, so a
//     command pipelined behind a successful login is still in Client.R.
//   - Backend responses are read whole: literals in untagged data are
//     consumed by length, so no literal content is ever parsed as a response
//     (a literal cannot fake a tagged line).
//   - Literals from the client are read by the handler (it sends its own "+"
//     for synchronizing ones, after the size and policy checks, never for a
//     refused command) and always sent to the backend as synchronizing
//     literals, waiting for the backend's "+".
//   - A continuation request from the backend outside LOGIN literals and
//     AUTHENTICATE is a protocol error that ends the session: relaying it
//     would let the client talk to the backend unparsed.
//   - Passwords, literal bodies and SASL data are never logged, at any
//     level. The handler's own copies are zeroed once used (the bufio
//     buffers of the connections are not under its control).
//   - Limits.LoginTimeout is one deadline for the whole pre-auth phase, on
//     both connections; context cancellation moves it to the past.
package imap
