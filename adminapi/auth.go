package adminapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
)

// wwwAuthenticate is sent with every 401.
const wwwAuthenticate = `Bearer realm="mailgate"`

// needsAuth reports whether a request path is an API path. Unknown /api/
// paths need the token too, so the route list is not disclosed to strangers.
func needsAuth(path string) bool {
	return path == "/api" || strings.HasPrefix(path, "/api/")
}

// authorized checks "Authorization: Bearer <token>". The scheme is
// case-insensitive (RFC 7235 §2.1). Both sides are hashed before the
// constant-time compare so that not even the token's length leaks.
func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Values("Authorization")
	if len(h) != 1 {
		return false
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(h[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	tok = strings.TrimSpace(tok)
	if tok == "" {
		return false
	}
	sum := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(sum[:], s.tokenSum.Load()[:]) == 1
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request) {
	// Log who and where, never the header itself.
	s.log.Warn("admin api: unauthorized request", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
	w.Header().Set("WWW-Authenticate", wwwAuthenticate)
	writeError(w, apiErr(http.StatusUnauthorized, CodeUnauthorized, "missing or invalid bearer token"))
}
