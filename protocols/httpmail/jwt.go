package httpmail

import (
	"encoding/base64"
	"encoding/json"
	"strings"
)

// jwtClaims are the claims that name a user, in the order they are
// preferred: Microsoft Entra's upn, then OIDC preferred_username, Entra v1
// unique_name, email and finally sub (docs/protocols.md §6.5).
var jwtClaims = []string{"upn", "preferred_username", "unique_name", "email", "sub"}

// maxJWT bounds the token length read for attribution.
const maxJWT = 16 << 10

// JWTUser reads the user a JWT claims to be, without verifying the
// signature: the result is an attribution hint only. It returns the value and
// the claim it came from; ok is false for an opaque token, a JWE (5
// segments), or a JWT without any of the claims.
func JWTUser(token string) (user, claim string, ok bool) {
	if len(token) > maxJWT {
		return "", "", false
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return "", "", false
	}
	h, ok := decodeSegment(parts[0])
	if !ok {
		return "", "", false
	}
	if _, isJWS := h["alg"]; !isJWS {
		return "", "", false
	}
	claims, ok := decodeSegment(parts[1])
	if !ok {
		return "", "", false
	}
	for _, c := range jwtClaims {
		if v, isString := claims[c].(string); isString {
			if v = strings.TrimSpace(v); v != "" && !strings.ContainsAny(v, "\r\n\x00") {
				return v, c, true
			}
		}
	}
	return "", "", false
}

// decodeSegment decodes a JSON object (the header or the claims) in
// base64url without padding (RFC 7515 §2), tolerating padding that some
// issuers leave in.
func decodeSegment(s string) (map[string]any, bool) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, false
	}
	var m map[string]any
	if json.Unmarshal(b, &m) != nil {
		return nil, false
	}
	return m, true
}
