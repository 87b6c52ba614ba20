package protocols

import "errors"

// Errors a Handler's PreAuth may wrap, so the proxy can classify how a
// pre-auth session ended without knowing the protocol. Test with errors.Is.
// In every case the handler has already told the client what the protocol
// allows.
var (
	// ErrClientQuit: the client ended the session (IMAP LOGOUT, POP3/SMTP
	// QUIT) or closed the connection before logging in.
	ErrClientQuit = errors.New("client ended the session before login")
	// ErrLoginTimeout: Limits.LoginTimeout expired.
	ErrLoginTimeout = errors.New("login timeout")
	// ErrTooManyBadCommands: Limits.MaxBadCommands was reached.
	ErrTooManyBadCommands = errors.New("too many invalid commands")
	// ErrBackend: the backend failed, refused the session, closed the
	// connection or broke the protocol.
	ErrBackend = errors.New("backend failure")
	// ErrClientProtocol: the client broke the protocol in a way that cannot
	// be answered and recovered from (e.g. an oversized non-synchronizing
	// literal already in flight).
	ErrClientProtocol = errors.New("client protocol violation")
)
