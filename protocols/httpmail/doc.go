// Package httpmail is mailgate's front for the HTTP mail protocols:
// Exchange ActiveSync, EWS (and Autodiscover), MAPI over HTTP (and RPC over
// HTTP), WebDAV/CalDAV/CardDAV and webmail. One HTTPS listener serves
// HTTP/1.1 and HTTP/2, the same port over UDP serves HTTP/3 (quic-go), and
// an optional plain listener serves a TLS-terminating load balancer.
//
// Every request is routed by path prefix to a protocol and its backend,
// attributed to a user (Basic, Digest username, Bearer JWT claims, NTLM
// AUTHENTICATE, ActiveSync User=, webmail session cookie), admitted by the
// Tracker (connect-time gate), gated (Conn.CheckLogin) before anything is
// forwarded, counted for as long as it is in flight, and reverse-proxied.
// The backend's answer is the verdict: a 2xx authenticates the user, a 401
// to a credential is a failed login, a 5xx a temporary failure.
//
// Typical usage:
//
//	srv, err := httpmail.New(httpmail.Options{
//		Routes:    []httpmail.Route{{Protocol: "eas", Backend: easURL}},
//		Tracker:   tracker, // accounting.Registry behind an adapter
//		TLSConfig: certs,
//	})
//	srv.ListenTLS("0.0.0.0:443")
//	srv.ListenHTTP3("0.0.0.0:443")
//	...
//	srv.Shutdown(ctx)
//
// Implementation notes:
//   - A live connection is a request in flight or an open websocket, never
//     an idle keep-alive socket. EAS Ping, MAPI NotificationWait and EWS
//     streaming count while they wait; they get LongPollTimeout as their
//     per-request deadline (http.ResponseController), and the server has
//     no WriteTimeout that could cut them.
//   - NTLM and Negotiate authenticate a connection (MS-NLMP). A client
//     connection that starts either gets backend connections of its own
//     (one at a time), which never serve anyone else and close with it;
//     later requests on it without Authorization keep its user.
//   - HTTP/1.x connections pass through a framing guard that refuses
//     ambiguous requests (smuggle.go) before net/http parses them.
//   - Client address headers from untrusted clients are dropped; the
//     backend gets X-Forwarded-For, Forwarded and X-Real-IP from this front.
//   - WebDAV names resources outside the request line (Destination, If,
//     Location, Content-Location, DAV:href in XML bodies); on a route whose
//     client-facing path differs from the backend's, those are mapped both
//     ways (davurls.go, davxml.go, streaming). The RFC 6764 well-known URIs
//     are answered here with a redirect to the route's DAV root.
//   - Logs name the method, path, protocol, user, mechanism, status and
//     client, never a header value, a query string, a body or a cookie.
//   - This package imports only protocols and internal/netx (and external
//     modules; internal/archtest checks it); the
//     Tracker and Webmail are interfaces that accounting and package webmail
//     satisfy, wired in cmd/mailgate.
package httpmail
