// Package pop3 is mailgate's POP3 front end: a protocols.Handler that runs
// the AUTHORIZATION state of a POP3 session (RFC 1939) between a client and
// a backend, then hands the pair back for blind relay. It follows CAPA and
// response codes (RFC 2449), STLS (RFC 2595 §4), AUTH (RFC 5034), and the
// RFC 3206 response codes SYS/TEMP, SYS/PERM and AUTH.
//
// Typical usage, by the proxy core:
//
//	h := pop3.New(pop3.Options{})
//	err := h.PreAuth(ctx, &protocols.Session{Client: c, Backend: b, ...})
//	if err == nil {
//		// authenticated: forward s.Client.R's buffered bytes, then relay
//	}
//
// What PreAuth does:
//
//   - Relays the backend greeting unchanged, so an APOP timestamp is the
//     backend's (RFC 1939 §7). The one edit: Dovecot's "[XCLIENT]" code,
//     which tells a trusted peer it may rewrite the client address, is
//     removed. A negative greeting is relayed and ends the session. With
//     Session.BackendStartTLS the backend link gets STLS first; a backend
//     that refuses it is a hard error, and plaintext it sent after its +OK
//     is discarded (response injection, docs/protocols.md §9.2).
//   - CAPA is forwarded and its answer rewritten (docs/protocols.md §0.1, §3.2):
//     STLS only while the client link is plain and STLS is configured; USER
//     and the cleartext SASL mechanisms (PLAIN, LOGIN, XOAUTH2, OAUTHBEARER,
//     X-OAUTH2) hidden on a plain link when TLS is required for login; SASL
//     reduced to what the proxy can attribute (protocols.SASLOffer: those and
//     CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256), each once; never XCLIENT. A backend without
//     CAPA (-ERR) gets its -ERR relayed, unless STLS is to be offered: the
//     client then gets a list holding STLS alone, the one thing known to be
//     true. The same filter applies to the mechanism list of a bare AUTH.
//   - Answers STLS itself, discarding anything pipelined behind it
//     (CVE-2011-0411), and forgets a USER given before it.
//   - USER is answered locally with +OK; the decision is taken at PASS, so
//     the backend sees neither USER nor PASS of a refused login (docs/protocols.md
//     §0.2). APOP is gated on its name and forwarded as is. AUTH (every
//     mechanism of the CAPA filter, with or without initial response, "*" to
//     cancel) is followed far enough to learn the user before anything
//     secret leaves (protocols.Dialogue.RelaySASL); CRAM-MD5's challenge
//     comes from the backend.
//   - APOP stays available on a plain link when TLS is required for login:
//     its digest covers a one-time timestamp and is no reusable secret (like
//     CRAM-MD5 and SCRAM, which stay in the SASL list).
//   - The Observer gets the mechanism "USER" for USER/PASS, "APOP" for APOP
//     and the SASL mechanism name for AUTH.
//   - The verdict is the backend's +OK or -ERR. An -ERR with the response
//     code SYS/TEMP, SYS/PERM, IN-USE or LOGIN-DELAY is reported as temporary
//     (never a wrong password); AUTH or no code is a failed password.
//   - Every other command is answered locally with -ERR and counted as bad:
//     before login nothing but CAPA, STLS, USER, PASS, APOP, AUTH and QUIT
//     has a meaning (RFC 1939 §4), and a whitelist keeps the response shape
//     known (an unknown command might get a multi-line answer) and keeps
//     trusted-peer commands such as XCLIENT away from the backend. NOOP is
//     answered +OK locally. QUIT is forwarded and ends the session.
//
// Replies of the handler's own (RFC 2449 §8, RFC 3206):
//
//	gate: disabled        -ERR [AUTH] POP3 access is disabled for this account, ...
//	gate: lockout         -ERR [AUTH] Too many failed logins, try again later
//	gate: limit           -ERR [IN-USE] Too many connections ... (Dovecot's code for its
//	                      per-user connection limit; a client retries later)
//	plain link, TLS required   -ERR [AUTH] Plaintext authentication is disabled, ...
//	Refuse                -ERR [SYS/TEMP] ... ("-ERR Access denied" for a blocked client)
//	Goodbye               -ERR ... (dropped, shutdown, timeout)
//
// Client address: Session.ClientAddrVia must be empty or "none". POP3 has no
// standard way to pass the client address in band (Dovecot's XCLIENT for
// POP3 is a private extension, docs/protocols.md §3.6); the PROXY v2 header the
// proxy sends when dialing is the supported method. Any other value fails
// the session with an -ERR carrying SYS/TEMP, and an error log, rather than letting the
// backend see the proxy's address silently.
//
// Implementation notes:
//
//   - One command at a time. The handler reads exactly one client line and
//     does not read the next before the current one is answered, so a
//     command pipelined behind a successful login is still in Client.R.
//   - Lines: a command is at most 255 octets with CRLF (RFC 2449 §4), or
//     Limits.MaxLine if smaller. AUTH lines (the command with its initial
//     response, and every continuation) may be as long as a base64 message
//     of Limits.MaxLiteral octets (RFC 5034 §4 lets continuations exceed the
//     command limit). An over-long line is consumed and answered with -ERR.
//     The client may send Options.MaxPreAuthBytes in all before login.
//   - Backend responses: single-line ones are read as one line; only CAPA
//     and a bare AUTH get multi-line answers, read to the terminating "."
//     with dot-unstuffing and a size bound, and written back dot-stuffed.
//     The backend only ever receives whitelisted commands, so no other
//     response shape can occur.
//   - Toward the backend an AUTH never carries an initial response: the
//     message that named the user is sent after the backend's first
//     challenge. RFC 1734 servers take no initial response and RFC 5034
//     servers answer a bare AUTH with an empty challenge, so this works
//     with both.
//   - Passwords, digests and SASL lines are never logged, at any level, and
//     the handler's copies are zeroed once used (the bufio buffers of the
//     connections are not under its control).
//   - Limits.LoginTimeout is one deadline for the whole pre-auth phase, on
//     both connections; context cancellation moves it to the past.
package pop3
