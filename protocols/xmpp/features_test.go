package xmpp

import (
	"reflect"
	"strings"
	"testing"
)

// parseFeatures reads a <stream:features/> element as the backend wrote it.
func parseFeatures(t *testing.T, children string) *Element {
	t.Helper()
	r := testReader("<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:client'><stream:features>"+children+"</stream:features>", 32)
	if _, err := r.readHeader(nil); err != nil {
		t.Fatal(err)
	}
	el, err := r.nextElement()
	if err != nil {
		t.Fatal(err)
	}
	return el
}

func TestRewriteFeatures(t *testing.T) {
	const prosody = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" +
		"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism>" +
		"<mechanism>PLAIN</mechanism><mechanism>EXTERNAL</mechanism><mechanism> OAUTHBEARER </mechanism><mechanism>PLAIN</mechanism>" +
		"<mechanism>ANONYMOUS</mechanism><mechanism>X-OAUTH2</mechanism><mechanism>DIGEST-MD5</mechanism><x-unknown/></mechanisms>" +
		"<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-server-end-point'/></sasl-channel-binding>" +
		"<authentication xmlns='urn:xmpp:sasl:2'><mechanism>PLAIN</mechanism></authentication>" +
		"<register xmlns='http://jabber.org/features/iq-register'/><auth xmlns='http://jabber.org/features/iq-auth'/>" +
		"<compression xmlns='http://jabber.org/features/compress'><method>zlib</method></compression>" +
		"<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='a&amp;b'/>" +
		"<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>10000</max-bytes></limits>" +
		"<ver xmlns='urn:xmpp:features:rosterver'/><sm xmlns='urn:xmpp:sm:3'/><stream:unknown/>"
	const info = "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://prosody.im' ver='a&amp;b'/>" +
		"<limits xmlns='urn:xmpp:stream-limits:0'><max-bytes>10000</max-bytes></limits><ver xmlns='urn:xmpp:features:rosterver'/>"
	tests := []struct {
		name      string
		backend   string
		p         featurePolicy
		want      string
		wantMechs []string
	}{
		{"plain link with STARTTLS", prosody, featurePolicy{offerStartTLS: true},
			"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>" +
				"<mechanism>PLAIN</mechanism><mechanism>OAUTHBEARER</mechanism><mechanism>X-OAUTH2</mechanism></mechanisms>" + info,
			[]string{"SCRAM-SHA-1", "PLAIN", "OAUTHBEARER", "X-OAUTH2"}},
		{"TLS link", prosody, featurePolicy{},
			"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>SCRAM-SHA-1</mechanism>" +
				"<mechanism>PLAIN</mechanism><mechanism>OAUTHBEARER</mechanism><mechanism>X-OAUTH2</mechanism></mechanisms>" + info,
			[]string{"SCRAM-SHA-1", "PLAIN", "OAUTHBEARER", "X-OAUTH2"}},
		{"TLS required", prosody, featurePolicy{offerStartTLS: true, requireTLS: true},
			"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>" +
				"<mechanism>SCRAM-SHA-1</mechanism></mechanisms>" + info,
			[]string{"SCRAM-SHA-1"}},
		{"nothing attributable", "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism><mechanism>SCRAM-SHA-256-PLUS</mechanism></mechanisms>",
			featurePolicy{}, "", nil},
		{"empty", "", featurePolicy{offerStartTLS: true}, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, mechs := rewriteFeatures(parseFeatures(t, tt.backend), tt.p, nil)
			if want := "<stream:features>" + tt.want + "</stream:features>"; got != want {
				t.Errorf("features =\n%q\nwant\n%q", got, want)
			}
			if !reflect.DeepEqual(mechs, tt.wantMechs) {
				t.Errorf("mechanisms = %q, want %q", mechs, tt.wantMechs)
			}
		})
	}
	if got, _ := rewriteFeatures(nil, featurePolicy{}, nil); got != "<stream:features></stream:features>" {
		t.Errorf("nil features = %q", got)
	}
}

// TestEncodeHelpers: escaping and the small validators.
func TestEncodeHelpers(t *testing.T) {
	if got := saslFailure("not-authorized", "de", "a<b"); got != "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/><text xml:lang='de'>a&lt;b</text></failure>" {
		t.Errorf("saslFailure = %q", got)
	}
	if got := saslElement("auth", "X'Y", "="); got != "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X&apos;Y'>=</auth>" {
		t.Errorf("saslElement = %q", got)
	}
	if got := headerToBackend("ex'ample", ""); !strings.Contains(got, "to='ex&apos;ample' version='1.0'>") {
		t.Errorf("headerToBackend = %q", got)
	}
	for _, v := range []string{"1.0", "1.1", "01.0"} {
		if !versionOK(v) {
			t.Errorf("versionOK(%q) = false", v)
		}
	}
	for _, v := range []string{"", "1", "0.9", "2.0", "11.0", "x.1"} {
		if versionOK(v) {
			t.Errorf("versionOK(%q) = true", v)
		}
	}
	for _, d := range []string{"example.com", "bücher.example", "[::1]", "localhost"} {
		if !validDomain(d) {
			t.Errorf("validDomain(%q) = false", d)
		}
	}
	for _, d := range []string{"", "a b", "a@b", "a/b", "a'b", "a\x00", strings.Repeat("a", 256), "\xff"} {
		if validDomain(d) {
			t.Errorf("validDomain(%q) = true", d)
		}
	}
	if got := clip("aé", 2); got != "a" {
		t.Errorf("clip = %q", got)
	}
}

// TestFeaturesOfferRule: the mechanisms follow protocols.SASLOffer like the
// other protocols' (LOGIN, CRAM-MD5 and XOAUTH2 included), each once, and
// only as RFC 6120 §6.3.3 spells them.
func TestFeaturesOfferRule(t *testing.T) {
	f := parseFeatures(t, "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>CRAM-MD5</mechanism><mechanism>plain</mechanism>"+
		"<mechanism>LOGIN</mechanism><mechanism>XOAUTH2</mechanism><mechanism>CRAM-MD5</mechanism><mechanism>SCRAM-SHA-512</mechanism></mechanisms>")
	if _, mechs := rewriteFeatures(f, featurePolicy{}, nil); strings.Join(mechs, " ") != "CRAM-MD5 LOGIN XOAUTH2" {
		t.Errorf("mechanisms = %q", mechs)
	}
	if _, mechs := rewriteFeatures(f, featurePolicy{requireTLS: true}, nil); strings.Join(mechs, " ") != "CRAM-MD5" {
		t.Errorf("mechanisms while TLS is required = %q", mechs)
	}
}
