// Package netx is mailgate's front door, shared by every listener (the
// stream listeners of package proxy, the HTTP listeners of
// protocols/httpmail) and the demo's servers: the accept loop, the PROXY
// protocol (reading a trusted peer's header, refusing an untrusted peer's,
// writing one toward a backend) and the self-signed certificates of tests
// and the demo. It imports nothing of mailgate's: the arrow points down to
// it from everywhere (docs/architecture.md).
package netx
