// Package adminapi serves mailgate's HTTP JSON admin API: the live view of the
// accounting registry (tab counts, connections, user rows, authenticated-IP
// history) and the admin actions on it (drop, resync, enable or disable a
// protocol for a user, enable or disable a domain, IP blocks, lockouts, bulk
// actions), the User Connections web page and the Prometheus metrics.
//
// Typical usage:
//
//	api, err := adminapi.New(adminapi.Options{
//		Registry: reg, // *accounting.Registry
//		Tokens:   []adminapi.Token{{Name: "noc", Role: accounting.RoleOperator, Secret: token}},
//		Logger:   log,
//		Node:     cfg.Node,
//	})
//	if err != nil { ... }
//	srv := api.HTTPServer("127.0.0.1:1880") // or http.Server{Addr: ..., Handler: api}
//	go srv.ListenAndServe()
//
// The package declares the small Registry interface it needs and imports
// accounting for its types (and its protocol list) only.
//
// # Routes
//
// Every route under /api/ and /metrics needs "Authorization: Bearer <token>";
// /healthz, /readyz and the page (/, /ui/...) do not: the page holds no data,
// the API calls it makes carry the token.
//
// Each token has a name and a role (Options.Tokens; Options.Token is one
// token named "admin" with the role admin). A viewer may use every GET; an
// operator may also drop connections, resync, switch protocols for users
// and domains, and block, allow, drop and resync ActiveSync devices; an admin may also add and remove IP blocks, clear lockouts
// and run bulk actions. A request below its route's role is a 403 with the
// code "forbidden", logged at info. GET /api/v1/whoami tells a token's name,
// role and the actions it may take.
//
//	GET    /                                             the User Connections page
//	GET    /metrics                                      Prometheus text format
//	GET    /healthz, /readyz
//	GET    /api/v1/whoami                                the token's name, role, actions
//	GET    /api/v1/nodes                                 the cluster's nodes (one for a single node)
//	GET    /api/v1/connections/summary                   tab counts
//	GET    /api/v1/connections?protocol=&user=&ip=&node=  live connections (node: one cluster node's)
//	DELETE /api/v1/connections/{id}                      drop one connection
//	GET    /api/v1/users?protocol=                       the rows of a tab
//	GET    /api/v1/users/{user}                          one user's detail
//	GET    /api/v1/users/{user}/ips                      authenticated-IP history
//	GET    /api/v1/users/{user}/logins                   last login attempts, every protocol
//	POST   /api/v1/users/{user}/drop?protocol=           drop a user's connections
//	PUT    /api/v1/users/{user}/protocols/{protocol}     {"enabled":false,"drop":true}
//	GET    /api/v1/domains/{domain}                      {"domain","enabled","dropped":0}
//	PUT    /api/v1/domains/{domain}                      {"enabled":false,"drop":true}
//	POST   /api/v1/users/{user}/resync?protocol=         drop, reconcile, run the hook
//	GET    /api/v1/users/{user}/devices                  the user's ActiveSync devices
//	POST   /api/v1/users/{user}/devices/{id}/block       refuse the device (403 before the backend)
//	POST   /api/v1/users/{user}/devices/{id}/allow       lift that block
//	POST   /api/v1/users/{user}/devices/{id}/drop        end the device's live requests
//	POST   /api/v1/users/{user}/devices/{id}/resync      drop, run the eas hook with {device}
//	GET    /api/v1/blocks; POST (network, reason, duration|expires); DELETE ?network=
//	GET    /api/v1/lockouts; DELETE ?kind=ip|user&key=
//	POST   /api/v1/bulk                                  {"users","action","protocol","drop"}
//	GET    /api/v1/stats, /api/v1/runtime                counters, process cost
//	GET    /api/v1/audit?actor=&target=&since=&limit=    the changes made, newest first
//	POST   /api/v1/upgrade                               start the binary again on the same sockets; this process drains
//	GET    /api/v1/debug/pprof/{profile}                 Go runtime profiles (go tool pprof)
//
// A protocol selector is a protocol key (smtp imap pop xmpp eas mapi ews
// webdav webmail), "all" (the default where a selector is optional; not
// accepted by the protocols PUT), or "mapi+ews", the merged tab of the page.
// In a query string a literal '+' decodes to a space, so "mapi ews" is
// accepted as well as "mapi%2Bews"; in a path, "mapi+ews" is literal.
//
// # Conventions
//
//   - Every response is JSON (Content-Type application/json, Cache-Control
//     no-store). Every error, including 404 for an unknown route and 405 for a
//     wrong method, has the shape {"error":{"code":"...","message":"..."}};
//     the codes are the Code* constants.
//   - Times are RFC 3339 in UTC with second precision; a time or IP that does
//     not exist (never logged in, not yet authenticated) is null.
//   - A user in a path is the decoded path segment ("%40" and "@" both work,
//     '+' is literal); it is trimmed and lowercased like accounting does, and
//     responses carry that normalised form. Blank users are a 400.
//   - Unauthenticated connections have "user": "" (the empty string, never
//     null); on the users routes they form rows of their own, one per client
//     IP, after the named rows.
//   - Request bodies are limited to MaxBodyBytes; unknown JSON fields,
//     trailing data, unknown or repeated query parameters are a 400.
//   - Mutating actions are logged at info with the route, user, protocol and
//     result; the Authorization header is never logged.
//   - Every change (the DELETE, POST and PUT routes) is recorded in the
//     audit trail (Options.Audit) before the answer is sent: the token's
//     name and role, the client's address, the action, its target and
//     parameters, the reason and the outcome; each entry is also logged at
//     info as one line with the message "audit". The reason comes from the
//     X-Mailgate-Reason header or a "reason" field of the JSON body (the
//     routes without a body take an optional {"reason": "..."}); with
//     Options.RequireReason a change without one is a 400. Reads, 401s,
//     403s and changes refused for their input are not recorded.
package adminapi
