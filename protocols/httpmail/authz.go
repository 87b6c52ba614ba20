package httpmail

import (
	"encoding/base64"
	"net/url"
	"strings"
)

// Mechanism names reported to accounting.
const (
	MechBasic     = "basic"
	MechDigest    = "digest"
	MechBearer    = "bearer"
	MechNTLM      = "ntlm"
	MechNegotiate = "negotiate"
	MechEASUser   = "eas-user" // ActiveSync User= query parameter (a hint)
	MechCookie    = "cookie"   // webmail session cookie
	MechForm      = "form"     // webmail login form
)

// credential is what an Authorization header says, without the secret.
type credential struct {
	mech string // one of the Mech* constants; "" when there is no usable header
	user string // "" when the header names nobody (NTLM leg 1, Kerberos, opaque token, userhash)
	// hint: the name is a claim nobody checked (an unverified JWT). It may
	// deny, and it names the connection after a 2xx, but a 401 never counts
	// against that user (anyone can mint such a token).
	hint bool
	// ntlmType is the NTLM message type for NTLM/Negotiate (0: Kerberos or unreadable).
	ntlmType int
	// connBound: NTLM/Negotiate authenticate the connection, not the request.
	connBound bool
}

// maxAuthorization bounds the header value parsed.
const maxAuthorization = 96 << 10

// parseAuthorization reads the scheme and the user of an Authorization
// header value (RFC 9110 §11.6.2). The secret part is never returned.
func parseAuthorization(v string) credential {
	if v == "" || len(v) > maxAuthorization {
		return credential{}
	}
	scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	rest = strings.TrimSpace(rest)
	switch strings.ToLower(scheme) {
	case "basic":
		return credential{mech: MechBasic, user: basicUser(rest)}
	case "digest":
		return credential{mech: MechDigest, user: digestUser(rest)}
	case "bearer":
		c := credential{mech: MechBearer, hint: true}
		c.user, _, _ = JWTUser(rest)
		return c
	case "ntlm", "negotiate":
		c := credential{mech: MechNTLM, connBound: true}
		if strings.EqualFold(scheme, "negotiate") {
			c.mech = MechNegotiate
		}
		if m, ok := ParseNTLMToken(rest); ok {
			c.ntlmType = m.Type
			if m.Type == NTLMAuthenticate && !m.Anonymous {
				c.user = m.Identity()
			}
		}
		return c
	}
	return credential{}
}

// basicUser returns the user-id of Basic credentials (RFC 7617 §2: it
// cannot contain a colon, so the first colon splits). The password is not
// kept.
func basicUser(token string) string {
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		return ""
	}
	user, _, ok := strings.Cut(string(raw), ":")
	clear(raw)
	if !ok || strings.ContainsAny(user, "\r\n\x00") {
		return ""
	}
	return strings.TrimSpace(user)
}

// digestUser returns the username of Digest credentials (RFC 7616 §3.4):
// username="…", or username*=UTF-8”… for non-ASCII names. With
// userhash=true the field is a hash and names nobody.
func digestUser(params string) string {
	p := parseAuthParams(params)
	if strings.EqualFold(p["userhash"], "true") {
		return ""
	}
	if ext, ok := p["username*"]; ok {
		// RFC 8187 ext-value: charset'language'pct-encoded.
		parts := strings.SplitN(ext, "'", 3)
		if len(parts) == 3 && strings.EqualFold(parts[0], "UTF-8") {
			if u, err := url.PathUnescape(parts[2]); err == nil {
				return cleanName(u)
			}
		}
		return ""
	}
	return cleanName(p["username"])
}

func cleanName(s string) string {
	if strings.ContainsAny(s, "\r\n\x00") {
		return ""
	}
	return strings.TrimSpace(s)
}

// parseAuthParams parses a comma-separated list of auth-params (RFC 9110
// §11.2): token=token or token="quoted-string" with backslash escapes.
// Names are lowercased; a repeated name keeps its first value.
func parseAuthParams(s string) map[string]string {
	out := map[string]string{}
	i := 0
	for i < len(s) {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',') {
			i++
		}
		start := i
		for i < len(s) && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		name := strings.ToLower(s[start:i])
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			continue // a bare token (e.g. a token68): no value
		}
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			for i < len(s) && s[i] != '"' {
				if s[i] == '\\' && i+1 < len(s) {
					i++
				}
				val.WriteByte(s[i])
				i++
			}
			i++ // closing quote
		} else {
			for i < len(s) && s[i] != ',' {
				val.WriteByte(s[i])
				i++
			}
		}
		if _, dup := out[name]; !dup && name != "" {
			out[name] = strings.TrimSpace(val.String())
		}
	}
	return out
}

// digestStale reports a Digest challenge with stale=true: the client's nonce
// expired, its password was right (RFC 7616 §3.3), so the 401 is no failure.
func digestStale(wwwAuthenticate []string) bool {
	for _, v := range wwwAuthenticate {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if strings.EqualFold(scheme, "digest") && strings.EqualFold(parseAuthParams(rest)["stale"], "true") {
			return true
		}
	}
	return false
}

// ntlmChallengeLeg reports a 401 that continues an NTLM/Negotiate
// handshake (it carries a token for the client), which is no failure.
func ntlmChallengeLeg(wwwAuthenticate []string) bool {
	for _, v := range wwwAuthenticate {
		scheme, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
		if (strings.EqualFold(scheme, "ntlm") || strings.EqualFold(scheme, "negotiate")) && strings.TrimSpace(rest) != "" {
			return true
		}
	}
	return false
}
