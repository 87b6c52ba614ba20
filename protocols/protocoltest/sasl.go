package protocoltest

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
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
	var nonce, saltB64 string
	for _, a := range strings.Split(serverFirst, ",") {
		if v, ok := strings.CutPrefix(a, "r="); ok {
			nonce = v
		}
		if v, ok := strings.CutPrefix(a, "s="); ok {
			saltB64 = v
		}
	}
	salt, _ := base64.StdEncoding.DecodeString(saltB64)
	withoutProof := "c=biws,r=" + nonce
	proof, sig := SCRAMKeys(h, password, salt, clientFirstBare+","+serverFirst+","+withoutProof)
	return withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof), "v=" + base64.StdEncoding.EncodeToString(sig)
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
