package httpmail

import (
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseNTLM: any bytes, raw or as an Authorization token, parse without
// panicking, and a parsed AUTHENTICATE message's names are valid UTF-8 of
// bounded length.
func FuzzParseNTLM(f *testing.F) {
	f.Add(ntlmType3Msg("", alice, true))
	f.Add(ntlmType3Msg("EXAMPLE", "bob", false))
	f.Add(ntlmType2())
	raw1, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(ntlmType1(), "NTLM "))
	f.Add(raw1)
	f.Add([]byte("NTLMSSP\x00\x03\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseNTLM(b)
		if err == nil && m.Type == NTLMAuthenticate {
			for _, s := range []string{m.Domain, m.User, m.Workstation} {
				if !utf8.ValidString(s) || len(s) > 4*maxNTLMName {
					t.Fatalf("name %q", s)
				}
			}
		}
		ParseNTLMToken(base64.StdEncoding.EncodeToString(b))
		parseAuthorization("Negotiate " + base64.StdEncoding.EncodeToString(b))
	})
}

// FuzzDecodeEASBase64Query: the ActiveSync base64 query decoder and the
// query parser never panic and never read past the input.
func FuzzDecodeEASBase64Query(f *testing.F) {
	f.Add("jAAJBAp2MTQwRGV2aWNlAApTbWFydFBob25l")
	f.Add("jBIJBAp2MTQwRGV2aWNlAApTbWFydFBob25lCBFhbGljZUBleGFtcGxlLmNvbQ==")
	f.Add("Cmd=Ping&User=a&DeviceId=b&DeviceType=c")
	f.Add("jAAJBAp2MTQw")
	f.Fuzz(func(t *testing.T, s string) {
		q, err := DecodeEASBase64Query(s)
		if err == nil && !q.Base64 {
			t.Fatal("decoded query not marked base64")
		}
		ParseEASQuery(s)
		b, _ := base64.StdEncoding.DecodeString(s)
		DecodeEASBase64Query(base64.StdEncoding.EncodeToString(b))
	})
}

// FuzzJWTUser: the claim extractor never panics and returns a name only
// with ok.
func FuzzJWTUser(f *testing.F) {
	f.Add(makeJWT(map[string]any{"upn": alice}))
	f.Add(makeJWT(map[string]any{"sub": 1}))
	f.Add("a.b.c")
	f.Add("eyJhbGciOiJub25lIn0.eyJ1cG4iOiJ4In0.")
	f.Fuzz(func(t *testing.T, tok string) {
		u, c, ok := JWTUser(tok)
		if ok != (u != "") || ok != (c != "") {
			t.Fatalf("JWTUser(%q) = %q %q %v", tok, u, c, ok)
		}
		if strings.ContainsAny(u, "\r\n\x00") {
			t.Fatalf("user with control characters: %q", u)
		}
	})
}
