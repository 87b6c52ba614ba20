package protocoltest

import (
	"bytes"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strings"
)

// SCRAMKeys returns the client proof and the server signature of a SCRAM
// exchange (RFC 5802 §3) with 4096 iterations.
func SCRAMKeys(h func() hash.Hash, password string, salt []byte, authMsg string) (proof, serverSig []byte) {
	salted, err := pbkdf2.Key(h, password, salt, 4096, h().Size())
	if err != nil {
		panic(err)
	}
	mac := func(key []byte, s string) []byte {
		m := hmac.New(h, key)
		m.Write([]byte(s))
		return m.Sum(nil)
	}
	clientKey := mac(salted, "Client Key")
	hh := h()
	hh.Write(clientKey)
	clientSig := mac(hh.Sum(nil), authMsg)
	proof = make([]byte, len(clientKey))
	for i := range proof {
		proof[i] = clientKey[i] ^ clientSig[i]
	}
	return proof, mac(mac(salted, "Server Key"), authMsg)
}

// SCRAMClientFinal computes the client-final-message answering serverFirst
// (channel binding "biws", no binding), and the "v=" the server must answer
// with.
func SCRAMClientFinal(h func() hash.Hash, password, clientFirstBare, serverFirst string) (final, wantV string) {
	nonce := scramAttr(serverFirst, "r")
	salt, _ := base64.StdEncoding.DecodeString(scramAttr(serverFirst, "s"))
	withoutProof := "c=biws,r=" + nonce
	proof, sig := SCRAMKeys(h, password, salt, clientFirstBare+","+serverFirst+","+withoutProof)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), "v=" + base64.StdEncoding.EncodeToString(sig)
}

// scramAttr returns the value of attribute key ("r", "s", "n"...) of a
// SCRAM message; the last one when it is repeated.
func scramAttr(msg, key string) (v string) {
	for _, a := range strings.Split(msg, ",") {
		if x, ok := strings.CutPrefix(a, key+"="); ok {
			v = x
		}
	}
	return v
}

// ParseOAuth returns the user and the bearer token of a decoded XOAUTH2 or
// OAUTHBEARER (RFC 7628) initial response; mech is the mechanism name.
func ParseOAuth(mech, msg string) (user, token string) {
	if mech == "OAUTHBEARER" {
		gs2, rest, _ := strings.Cut(msg, "\x01")
		for _, f := range strings.Split(gs2, ",") {
			if v, ok := strings.CutPrefix(f, "a="); ok {
				user = v
			}
		}
		msg = rest
	}
	for _, kv := range strings.Split(msg, "\x01") {
		if v, ok := strings.CutPrefix(kv, "user="); ok {
			user = v
		}
		if v, ok := strings.CutPrefix(kv, "auth=Bearer "); ok {
			token = v
		}
	}
	return user, token
}

// CRAMMD5 is the hex HMAC-MD5 digest of challenge keyed with secret, the
// second word of a CRAM-MD5 response (RFC 2195 §2).
func CRAMMD5(secret, challenge string) string {
	m := hmac.New(md5.New, []byte(secret))
	m.Write([]byte(challenge))
	return hex.EncodeToString(m.Sum(nil))
}

// SASLServer is the server side of the SASL exchanges of a scripted
// line-based backend: PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1, SCRAM-SHA-256
// (with a fixed salt and nonce suffix), XOAUTH2 and OAUTHBEARER. The lines it
// answers with are the protocol's, given without CRLF.
type SASLServer struct {
	Users map[string]string // user -> password
	Token string            // the valid OAuth bearer token

	Send     func(line string)       // writes one line
	ReadLine func() (string, error)  // reads one line without its CRLF
	Cont     string                  // precedes a base64 challenge: "+ ", "334 "
	Verdict  func(user, pass string) // answers a PLAIN or LOGIN credential
	// Success answers a proven CRAM-MD5, SCRAM or OAuth login; name is
	// "CRAM-MD5", "SCRAM" or the OAuth mechanism.
	Success func(user, name string)

	Cancelled   string // the client sent "*"
	BadBase64   string // the client sent something else than base64
	Malformed   string // a PLAIN or SCRAM message that does not parse
	NoIR        string // CRAM-MD5 came with an initial response
	Failed      string // a wrong CRAM-MD5 digest or SCRAM proof
	BadToken    string // a wrong OAuth token, after the error challenge
	NotEmpty    string // the answer to SCRAM's server-final was not empty
	Unsupported string // any other mechanism
}

// Respond sends a challenge and reads the answer; ok is false when the
// client cancelled or sent garbage (already answered) or the connection
// ended.
func (s *SASLServer) Respond(challenge []byte) ([]byte, bool) {
	s.Send(s.Cont + base64.StdEncoding.EncodeToString(challenge))
	line, err := s.ReadLine()
	if err != nil {
		return nil, false
	}
	if line == "*" {
		s.Send(s.Cancelled)
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		s.Send(s.BadBase64)
		return nil, false
	}
	return b, true
}

// Authenticate runs one exchange for mech (upper case); ir is the initial
// response when hasIR.
func (s *SASLServer) Authenticate(mech, ir string, hasIR bool) {
	var first []byte
	if hasIR && ir != "=" {
		var err error
		if first, err = base64.StdEncoding.DecodeString(ir); err != nil {
			s.Send(s.BadBase64)
			return
		}
	}
	next := func(ch string) ([]byte, bool) {
		if hasIR {
			hasIR = false
			return first, true
		}
		return s.Respond([]byte(ch))
	}
	switch mech {
	case "PLAIN":
		msg, ok := next("")
		if !ok {
			return
		}
		parts := bytes.Split(msg, []byte{0})
		if len(parts) != 3 {
			s.Send(s.Malformed)
			return
		}
		s.Verdict(string(parts[1]), string(parts[2]))
	case "LOGIN":
		user, ok := next("Username:")
		if !ok {
			return
		}
		pass, ok := s.Respond([]byte("Password:"))
		if !ok {
			return
		}
		s.Verdict(string(user), string(pass))
	case "CRAM-MD5":
		if hasIR {
			s.Send(s.NoIR)
			return
		}
		chal := "<1896.697170952@backend.test>"
		resp, ok := s.Respond([]byte(chal))
		if !ok {
			return
		}
		user, digest, _ := cutLast(string(resp), ' ')
		if pw, known := s.Users[user]; known && CRAMMD5(pw, chal) == digest {
			s.Success(user, mech)
		} else {
			s.Send(s.Failed)
		}
	case "SCRAM-SHA-1", "SCRAM-SHA-256":
		h := sha256.New
		if mech == "SCRAM-SHA-1" {
			h = sha1.New
		}
		cf, ok := next("")
		if !ok {
			return
		}
		s.scram(h, string(cf))
	case "XOAUTH2", "OAUTHBEARER":
		msg, ok := next("")
		if !ok {
			return
		}
		user, token := ParseOAuth(mech, string(msg))
		if _, known := s.Users[user]; known && token == s.Token {
			s.Success(user, mech)
			return
		}
		js := `{"status":"invalid_token","scope":"mail","openid-configuration":"https://example.com/.well-known/openid-configuration"}`
		if mech == "XOAUTH2" {
			js = `{"status":"401","schemes":"bearer","scope":"https://mail.google.com/"}`
		}
		if _, ok := s.Respond([]byte(js)); !ok {
			return
		}
		s.Send(s.BadToken)
	default:
		s.Send(s.Unsupported)
	}
}

// cutLast is strings.Cut at the last sep; without one, before is s.
func cutLast(s string, sep byte) (before, after string, found bool) {
	i := strings.LastIndexByte(s, sep)
	if i < 0 {
		return s, "", false
	}
	return s[:i], s[i+1:], true
}

// scram is the server side of RFC 5802. Success with data has no place in
// these protocols: v= is a challenge, answered with an empty line, then
// success (RFC 5034 §4, RFC 4954 §4).
func (s *SASLServer) scram(h func() hash.Hash, clientFirst string) {
	parts := strings.SplitN(clientFirst, ",", 3)
	if len(parts) != 3 {
		s.Send(s.Malformed)
		return
	}
	bare := parts[2]
	user, cnonce := scramAttr(bare, "n"), scramAttr(bare, "r")
	salt := []byte("mailgate-salt")
	serverFirst := "r=" + cnonce + "srvnonce,s=" + base64.StdEncoding.EncodeToString(salt) + ",i=4096"
	final, ok := s.Respond([]byte(serverFirst))
	if !ok {
		return
	}
	withoutProof, proofB64, _ := strings.Cut(string(final), ",p=")
	proof, serverSig := SCRAMKeys(h, s.Users[user], salt, bare+","+serverFirst+","+withoutProof)
	if _, known := s.Users[user]; !known || base64.StdEncoding.EncodeToString(proof) != proofB64 {
		s.Send(s.Failed)
		return
	}
	last, ok := s.Respond([]byte("v=" + base64.StdEncoding.EncodeToString(serverSig)))
	if !ok {
		return
	}
	if len(last) != 0 {
		s.Send(s.NotEmpty)
		return
	}
	s.Success(user, "SCRAM")
}
