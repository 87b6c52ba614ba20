package xmpp

import (
	"bytes"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/protocols"
)

// Stream headers and the backend stream (RFC 6120 §4.2-§4.7, §5.4).

// readClientHeader reads the client's stream header: the first one, the one
// after STARTTLS, or (restart true) the one after SASL success, whose raw
// bytes are forwarded to the backend as written, less the whitespace in
// front (see trimXMLSpace). The domain may not change
// across restarts: it names the user the gate was asked about.
func (ss *session) readClientHeader(restart bool) error {
	if err := ss.Flush(); err != nil {
		return err
	}
	var raw []byte
	var rec *[]byte
	if restart {
		rec = &raw
	}
	hdr, err := ss.cr.readHeader(rec)
	if err != nil {
		return ss.clientReadErr(err)
	}
	if hdr.Name.Local != "stream" || hdr.Name.Space != nsStreams || ss.cr.rootDefaultNS() != nsClient {
		return &streamErr{cond: "invalid-namespace", text: "Expected a jabber:client stream", err: protocols.ErrClientProtocol}
	}
	if v, _ := hdr.Attr("version"); !versionOK(v) {
		return &streamErr{cond: "unsupported-version", text: "XMPP 1.0 is required", err: protocols.ErrClientProtocol}
	}
	to, hasTo := hdr.Attr("to")
	to = strings.ToLower(to)
	switch {
	case ss.domain == "" && hasTo:
		if !validDomain(to) {
			return &streamErr{cond: "host-unknown", err: protocols.ErrClientProtocol}
		}
		ss.domain = to
	case ss.domain == "" && ss.opts.DefaultDomain != "":
		ss.domain = strings.ToLower(ss.opts.DefaultDomain)
	case ss.domain == "":
		return &streamErr{cond: "host-unknown", text: "The stream header names no domain", err: protocols.ErrClientProtocol}
	case hasTo && to != ss.domain:
		return &streamErr{cond: "policy-violation", text: "The domain may not change when the stream restarts", err: protocols.ErrClientProtocol}
	}
	if ss.from == "" {
		ss.from = ss.domain
	}
	if lang, ok := hdr.AttrNS(nsXML, "lang"); ok && validLang(lang) && ss.lang == "" {
		ss.lang = lang
	}
	if restart {
		ss.toBackend(string(trimXMLSpace(raw)))
	}
	return nil
}

// versionOK accepts a major version of 1 (RFC 6120 §4.7.5).
func versionOK(v string) bool {
	major, _, ok := strings.Cut(v, ".")
	return ok && strings.TrimLeft(major, "0") == "1"
}

// validDomain is a loose check of a JID domainpart (RFC 7622 §3.2): text
// that cannot break out of anything it is written into, of sane length.
func validDomain(d string) bool {
	if d == "" || len(d) > 255 || !utf8.ValidString(d) {
		return false
	}
	for _, r := range d {
		if r <= ' ' || r == 0x7F || strings.ContainsRune(`@/\"'<>&`, r) {
			return false
		}
	}
	return true
}

// validLang accepts a plausible language tag (BCP 47 characters).
func validLang(l string) bool {
	if l == "" || len(l) > 35 {
		return false
	}
	for _, c := range []byte(l) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// openBackend opens the stream to the backend and reads its features,
// upgrading the link with STARTTLS first when configured.
func (ss *session) openBackend() error {
	if err := ss.backendStream(); err != nil {
		return err
	}
	offer := ss.features.Child(nsTLS, "starttls")
	if ss.ps.BackendStartTLS == nil {
		if offer != nil && offer.Child(nsTLS, "required") != nil {
			ss.Log.Warn("backend requires STARTTLS but backend TLS is not configured")
		}
		return nil
	}
	// RFC 6120 §5.4: STARTTLS to the backend before anything else. The
	// backend must offer it; a missing offer is a hard error, never a
	// silent downgrade (docs/protocols.md §9.2).
	if offer == nil {
		return backendErr(errNoBackendStartTLS)
	}
	ss.toBackend("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	el, err := ss.readBackend()
	if err != nil {
		return err
	}
	if el.Name != (Name{nsTLS, "proceed"}) {
		return backendErr(errBackendStartTLS)
	}
	// StartTLSClient drops plaintext the backend sent after <proceed/>
	// (response injection, docs/protocols.md §9.2).
	if err := ss.Backend.StartTLSClient(ss.ps.BackendStartTLS); err != nil {
		ss.backendUp = false
		return backendErr(fmt.Errorf("TLS handshake: %w", err))
	}
	ss.Log.Debug("backend STARTTLS done")
	// A new stream on the TLS link; what was learned before is void.
	return ss.backendStream()
}

// backendStream sends our stream header to the backend and reads its header
// and features (RFC 6120 §4.3).
func (ss *session) backendStream() error {
	ss.toBackend(headerToBackend(ss.domain, ss.lang))
	ss.backendUp = true
	if err := ss.flushBackend(); err != nil {
		return err
	}
	hdr, err := ss.readBackendHeader(nil)
	if err != nil {
		return err
	}
	id, _ := hdr.Attr("id")
	if id == "" || len(id) > 256 {
		id = newStreamID()
	}
	ss.streamID = id
	if from, ok := hdr.Attr("from"); ok && validDomain(strings.ToLower(from)) {
		ss.from = from
	}
	el, err := ss.readBackend()
	if err != nil {
		return err
	}
	if el.Name != (Name{nsStreams, "features"}) {
		return backendErr(errBackendProtocol)
	}
	ss.features = el
	return nil
}

// sendHeaderAndFeatures opens (or reopens, after STARTTLS) the client's
// stream with the backend's id and the features rewritten for the client's
// link.
func (ss *session) sendHeaderAndFeatures() error {
	ss.out(headerToClient(ss.from, ss.streamID, ss.lang))
	ss.headerSent = true
	feats, mechs := rewriteFeatures(ss.features, ss.featurePolicy(), ss.Log)
	ss.offered = make(map[string]bool, len(mechs))
	for _, m := range mechs {
		ss.offered[m] = true
	}
	ss.out(feats)
	return ss.Flush()
}

// featurePolicy says what the client's link needs.
func (ss *session) featurePolicy() featurePolicy {
	return featurePolicy{
		offerStartTLS: !ss.ps.ClientTLS && ss.ps.ClientStartTLS != nil,
		requireTLS:    ss.tlsRequired(),
	}
}

// tlsRequired reports whether cleartext mechanisms are refused right now.
func (ss *session) tlsRequired() bool {
	return ss.ps.RequireTLSForLogin && !ss.ps.ClientTLS
}

// relayStreamError passes the backend's stream error to the client, rebuilt
// from its condition and text, and closes the client's stream. A redirect
// (see-other-host) is not relayed: it would send the client around the
// proxy.
func (ss *session) relayStreamError(el *Element) {
	cond, text := "undefined-condition", ""
	for _, c := range el.Children {
		switch {
		case c.Name.Space != nsStreamErr:
		case c.Name.Local == "text":
			text = clip(c.Text, 1024)
		case streamConditions[c.Name.Local] && cond == "undefined-condition":
			cond = c.Name.Local
		}
	}
	if cond == "see-other-host" {
		cond, text = "remote-connection-failed", ""
	}
	ss.Log.Info("backend closed the stream", "condition", cond)
	ss.closeClient(cond, text)
}

// clip bounds text relayed from the backend, on a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// streamConditions are the defined stream error conditions (RFC 6120 §4.9.3).
var streamConditions = map[string]bool{
	"bad-format": true, "bad-namespace-prefix": true, "conflict": true, "connection-timeout": true,
	"host-gone": true, "host-unknown": true, "improper-addressing": true, "internal-server-error": true,
	"invalid-from": true, "invalid-namespace": true, "invalid-xml": true, "not-authorized": true,
	"not-well-formed": true, "policy-violation": true, "remote-connection-failed": true, "reset": true,
	"resource-constraint": true, "restricted-xml": true, "see-other-host": true, "system-shutdown": true,
	"undefined-condition": true, "unsupported-encoding": true, "unsupported-feature": true,
	"unsupported-stanza-type": true, "unsupported-version": true,
}

// readBackendHeader reads the backend's stream header (recording its bytes
// into raw when non-nil) and checks it opens an XMPP 1.0 jabber:client
// stream.
func (ss *session) readBackendHeader(raw *[]byte) (*Element, error) {
	hdr, err := ss.br.readHeader(raw)
	if err != nil {
		ss.backendUp = false
		return nil, backendErr(err)
	}
	if hdr.Name != (Name{nsStreams, "stream"}) || ss.br.rootDefaultNS() != nsClient {
		return nil, backendErr(errBackendHeader)
	}
	if v, _ := hdr.Attr("version"); !versionOK(v) {
		return nil, backendErr(errBackendHeader)
	}
	return hdr, nil
}

// restartedBackend completes the stream restart after SASL success (RFC 6120
// §6.4.6): the client's new header has been queued for the backend; the
// backend's new header goes to the client as written, its post-login
// features rewritten by postAuthFeatures. What either side sends next is
// left unread for the relay.
func (ss *session) restartedBackend() error {
	if err := ss.flushBackend(); err != nil {
		return err
	}
	ss.backendUp = true
	var raw []byte
	if _, err := ss.readBackendHeader(&raw); err != nil {
		return err
	}
	ss.out(string(trimXMLSpace(raw)))
	ss.headerSent = true
	el, err := ss.readBackend()
	if err != nil {
		return err
	}
	if el.Name != (Name{nsStreams, "features"}) {
		return backendErr(errBackendProtocol)
	}
	ss.out(postAuthFeatures(el))
	return ss.Flush()
}

// trimXMLSpace drops the XML whitespace in front of a recorded stream
// header. It is legal between the previous stream's last element and the
// new document (a client's newline after </auth>, say), but in front of the
// XML declaration of the new document it is not well-formed XML (XML 1.0
// §2.8: the declaration comes first), and strict servers (ejabberd, Prosody)
// refuse it.
func trimXMLSpace(b []byte) []byte {
	return bytes.TrimLeft(b, " \t\r\n")
}
