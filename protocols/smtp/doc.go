// Package smtp is mailgate's SMTP front end: a protocols.Handler that runs
// the part of an SMTP session before login (RFC 5321) between a client and a
// backend MTA, then hands the pair back for blind relay. It serves three
// roles: "submission" (port 587, RFC 6409: STARTTLS + AUTH), "submissions"
// (port 465, RFC 8314 §3.3: implicit TLS, done by the proxy) and "mx"
// (port 25: no login; opportunistic STARTTLS).
//
// Typical usage, by the proxy core:
//
//	h := smtp.New(smtp.Options{Role: smtp.RoleSubmission, Hostname: "mx.example.com"})
//	err := h.PreAuth(ctx, &protocols.Session{Client: c, Backend: b, ...})
//	if err == nil {
//		// forward s.Client.R's buffered bytes, then relay
//	}
//
// What PreAuth does:
//
//   - Relays the backend greeting (multi-line aware). A 421 greeting is
//     relayed and ends the session; a 554 greeting is relayed and the
//     session goes on, the backend answering 503 to everything but QUIT
//     (RFC 5321 §3.1). With Session.BackendStartTLS the backend link is
//     upgraded first (EHLO, STARTTLS, RFC 3207).
//   - Relays EHLO and HELO. Every line of an EHLO reply is rewritten
//     (docs/protocols.md §0.1): STARTTLS only while the client link is plain and
//     Session.ClientStartTLS is set; AUTH and the legacy AUTH= line keep only
//     the mechanisms the proxy can attribute to a user (protocols.SASLOffer:
//     PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256, XOAUTH2,
//     OAUTHBEARER, X-OAUTH2), each once, and never more than the backend
//     offers; no AUTH at all on the mx role or while TLS is required for
//     login and the link is plain (as Postfix's smtpd_tls_auth_only);
//     XCLIENT and XFORWARD are never shown (they are for trusted proxies
//     only), REQUIRETLS only on a TLS client link (RFC 8689).
//   - Answers STARTTLS itself ("220 2.0.0 Ready to start TLS") and never
//     forwards it; anything the client pipelined behind it is discarded
//     (CVE-2011-0411, RFC 3207 §4.2). The client's next EHLO is relayed to
//     the backend, which resets its state as for RSET (RFC 5321 §4.1.4).
//   - Follows AUTH (RFC 4954, protocols.Dialogue.RelaySASL) for every
//     attributable mechanism, with or without initial response: the handler
//     sends the challenges that carry no backend data itself ("334 " for
//     client-first mechanisms, "Username:" for LOGIN), learns the user, asks
//     the Gate, and only then lets the credential reach the backend. CRAM-MD5's challenge comes from
//     the backend; the client's response is held until the gate allowed it,
//     else the backend exchange is cancelled with "*". The backend's reply
//     decides: 235 is success (Observer.Authenticated, then the 235 reaches
//     the client and PreAuth returns nil), 4xx a temporary failure, other
//     5xx codes a refused credential, except 500-504 (syntax, cancelled).
//   - Submission roles answer MAIL, RCPT, DATA, BDAT, VRFY, EXPN, ETRN...
//     before login with "530 5.7.0 Authentication required" themselves. The
//     mx role switches to blind relay at the first such command, forwarding
//     it and returning nil without calling Authenticated: the connection
//     stays an unauthenticated one in the accounting.
//   - Passes the client address with XCLIENT (Postfix XCLIENT_README) when
//     Session.ClientAddrVia is "xclient" and the backend's EHLO lists
//     XCLIENT, at the client's first HELO/EHLO.
//
// Decisions:
//
//   - AUTH on the mx role is hidden from EHLO and answered "503 5.5.1 Error:
//     authentication not enabled". Port 25 is for MTAs, which do not log
//     in, and every connection on it stays an unauthenticated row. The mx
//     backend should not offer AUTH either: after the switch to blind relay
//     nothing the client sends is parsed any more.
//   - XCLIENT never carries LOGIN=. The backend verifies the AUTH exchange
//     itself, so its SASL login name is already right; LOGIN= would make it
//     trust the proxy's word for a login instead, and an XCLIENT after AUTH
//     starts a new session at the backend. NAME= is not sent either: the
//     proxy does no DNS lookups.
//   - Before login the handler forwards only EHLO, HELO, NOOP, RSET and QUIT
//     (and AUTH as described). Everything else is answered locally, so a
//     client can never hand the backend an XCLIENT or XFORWARD of its own
//     while it trusts the proxy's address.
//
// Caveat for XCLIENT: Postfix decides once per connection, from the peer
// address, whether XCLIENT is allowed. After the switch to blind relay the
// client could send its own XCLIENT to a backend that trusts the proxy's
// address, and it would be obeyed. Prefer PROXY v2 (Postfix
// smtpd_upstream_proxy_protocol = haproxy), or keep XCLIENT for backends
// that only mailgate's submission listeners reach.
//
// Implementation notes:
//
//   - One command at a time. The handler reads exactly one client command,
//     forwards it if it must, reads the backend's whole reply and answers
//     before it reads the next command. At most one command is ever
//     outstanding at the backend, so no reply can be attributed to the
//     wrong command, and pipelined commands (RFC 2920) wait in Client.R in
//     order. After a successful AUTH (which RFC 4954 §4 lets a client
//     pipeline MAIL/RCPT behind when it carries an initial response) or the
//     mx switch, what follows is still unread in Client.R and the proxy
//     forwards it.
//   - Command lines are bounded to 512 octets with CRLF (RFC 5321
//     §4.5.3.1.4), AUTH command and exchange lines to 12288 (RFC 4954 §4:
//     "500 5.5.6" beyond). Backend replies are bounded in line length and
//     line count. Ten bad commands end the session with 421 (Dovecot
//     submission-login's limit); Limits.LoginTimeout is one deadline for the
//     whole phase on both connections and ends it with 421; context
//     cancellation moves the deadline to the past.
//   - Passwords, tokens and SASL lines are never logged, at any level, and
//     neither is any client command text except verbs from a fixed set: a
//     client confused about an exchange may send its password as a
//     command. The handler's own copies of SASL messages are zeroed once
//     used.
package smtp
