package protocols_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/protocols"
)

// TestSASLOffer: the one rule for which mechanisms a client may be offered.
func TestSASLOffer(t *testing.T) {
	backend := []string{"PLAIN", "plain", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS", "EXTERNAL",
		"GSSAPI", "XOAUTH2", "X-OAUTH2", "OAUTHBEARER", "DIGEST-MD5", ""}
	if got := strings.Join(protocols.SASLOffer{}.Filter(backend), " "); got != "PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256 XOAUTH2 X-OAUTH2 OAUTHBEARER" {
		t.Errorf("Filter = %q", got)
	}
	tls := protocols.SASLOffer{HideCleartext: true}
	if got := strings.Join(tls.Filter(backend), " "); got != "CRAM-MD5 SCRAM-SHA-256" {
		t.Errorf("Filter hiding cleartext = %q", got)
	}
	if _, err := tls.Exchange("plain"); !errors.Is(err, protocols.ErrSASLNeedsTLS) {
		t.Errorf("Exchange(plain) = %v, want ErrSASLNeedsTLS", err)
	}
	for _, m := range []string{"EXTERNAL", "external", "SCRAM-SHA-1-PLUS", "GSSAPI", "hunter2"} {
		if _, err := tls.Exchange(m); !errors.Is(err, protocols.ErrSASLMechanism) {
			t.Errorf("Exchange(%q) = %v, want ErrSASLMechanism", m, err)
		}
	}
	for m, want := range map[string]string{"plain": "PLAIN", "gssapi": "GSSAPI", "SCRAM-SHA-1-PLUS": "SCRAM-SHA-1-PLUS", "hunter2": "other"} {
		if got := protocols.SASLLogName(m); got != want {
			t.Errorf("SASLLogName(%q) = %q, want %q", m, got, want)
		}
	}
}
