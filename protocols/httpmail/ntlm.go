package httpmail

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"unicode/utf16"
)

// NTLM message types (MS-NLMP §2.2.1).
const (
	NTLMNegotiate    = 1 // NEGOTIATE_MESSAGE, the client's first leg
	NTLMChallenge    = 2 // CHALLENGE_MESSAGE, the server's answer
	NTLMAuthenticate = 3 // AUTHENTICATE_MESSAGE, carries domain, user and the responses
)

// NTLM negotiate flags used here (MS-NLMP §2.2.2.5).
const (
	ntlmFlagUnicode = 0x00000001 // NTLMSSP_NEGOTIATE_UNICODE: strings are UTF-16LE
	ntlmFlagOEM     = 0x00000002 // NTLMSSP_NEGOTIATE_OEM: strings use the OEM code page
)

var ntlmSignature = []byte("NTLMSSP\x00")

// maxNTLMToken bounds the base64 token decoded from an Authorization header.
// Real AUTHENTICATE messages are a few hundred bytes to a few KiB (NTLMv2
// responses carry the target info); SPNEGO wrappers add little.
const maxNTLMToken = 64 << 10

// maxNTLMName bounds the domain and user fields (bytes on the wire).
const maxNTLMName = 1024

// NTLMMessage is what the proxy reads from an NTLM message: its type and,
// for an AUTHENTICATE_MESSAGE, who is logging in. The responses themselves
// (which can be cracked offline) are never kept.
type NTLMMessage struct {
	Type        int
	Domain      string
	User        string
	Workstation string
	// Anonymous is an AUTHENTICATE_MESSAGE with an empty user and empty
	// NT response (MS-NLMP §3.2.5.1.2).
	Anonymous bool
}

// Identity is the name the proxy attributes the connection to: a UPN in the
// user field as is, otherwise DOMAIN\user (or just user without a domain).
func (m NTLMMessage) Identity() string {
	if m.User == "" {
		return ""
	}
	if strings.Contains(m.User, "@") || m.Domain == "" {
		return m.User
	}
	return m.Domain + `\` + m.User
}

var (
	errNTLMShort     = errors.New("ntlm: message too short")
	errNTLMSignature = errors.New("ntlm: no NTLMSSP signature")
	errNTLMField     = errors.New("ntlm: field out of bounds")
	errNTLMType      = errors.New("ntlm: unknown message type")
	errNTLMEncoding  = errors.New("ntlm: bad string encoding")
)

// ParseNTLM parses a decoded NTLM message (it must start with the
// NTLMSSP signature). Every offset and length is bounds-checked.
func ParseNTLM(b []byte) (NTLMMessage, error) {
	if len(b) < 12 {
		return NTLMMessage{}, errNTLMShort
	}
	if !bytes.Equal(b[:8], ntlmSignature) {
		return NTLMMessage{}, errNTLMSignature
	}
	m := NTLMMessage{Type: int(binary.LittleEndian.Uint32(b[8:12]))}
	switch m.Type {
	case NTLMNegotiate, NTLMChallenge:
		return m, nil
	case NTLMAuthenticate:
	default:
		return NTLMMessage{}, errNTLMType
	}
	// The oldest AUTHENTICATE messages end after the workstation field
	// (offset 52); NegotiateFlags sits at 60 when present.
	if len(b) < 52 {
		return NTLMMessage{}, errNTLMShort
	}
	nt, err := ntlmField(b, 20)
	if err != nil {
		return NTLMMessage{}, err
	}
	dom, err := ntlmField(b, 28)
	if err != nil {
		return NTLMMessage{}, err
	}
	usr, err := ntlmField(b, 36)
	if err != nil {
		return NTLMMessage{}, err
	}
	ws, err := ntlmField(b, 44)
	if err != nil {
		return NTLMMessage{}, err
	}
	if len(dom) > maxNTLMName || len(usr) > maxNTLMName || len(ws) > maxNTLMName {
		return NTLMMessage{}, errNTLMField
	}
	unicode := false
	if len(b) >= 64 {
		flags := binary.LittleEndian.Uint32(b[60:64])
		unicode = flags&ntlmFlagUnicode != 0
	} else {
		unicode = looksUTF16(usr) && looksUTF16(dom)
	}
	dec := decodeOEM
	if unicode {
		dec = decodeUTF16LE
	}
	if m.Domain, err = dec(dom); err != nil {
		return NTLMMessage{}, err
	}
	if m.User, err = dec(usr); err != nil {
		return NTLMMessage{}, err
	}
	if m.Workstation, err = dec(ws); err != nil {
		return NTLMMessage{}, err
	}
	m.Anonymous = m.User == "" && len(nt) == 0
	return m, nil
}

// ntlmField returns the payload a Len/MaxLen/BufferOffset field at off points to.
func ntlmField(b []byte, off int) ([]byte, error) {
	if off+8 > len(b) {
		return nil, errNTLMShort
	}
	n := int(binary.LittleEndian.Uint16(b[off:]))
	start := int(binary.LittleEndian.Uint32(b[off+4:]))
	if n == 0 {
		return nil, nil
	}
	if start < 0 || start > len(b) || n > len(b)-start {
		return nil, errNTLMField
	}
	return b[start : start+n], nil
}

func decodeUTF16LE(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", errNTLMEncoding
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	return string(utf16.Decode(u)), nil
}

// decodeOEM reads an OEM code page string. The code page is not on the wire;
// names are almost always ASCII, and Latin-1 keeps any other byte visible.
func decodeOEM(b []byte) (string, error) {
	r := make([]rune, len(b))
	for i, c := range b {
		r[i] = rune(c)
	}
	return string(r), nil
}

// looksUTF16 guesses the encoding of a message without flags: ASCII text in
// UTF-16LE has a zero in every odd byte.
func looksUTF16(b []byte) bool {
	if len(b)%2 != 0 {
		return false
	}
	for i := 1; i < len(b); i += 2 {
		if b[i] != 0 {
			return false
		}
	}
	return true
}

// ParseNTLMToken decodes the base64 token of an "NTLM" or "Negotiate"
// Authorization header. A Negotiate token may carry raw NTLMSSP or SPNEGO
// wrapping it (RFC 4559); the NTLMSSP signature is searched for in the
// decoded blob. ok is false for Kerberos and for anything unreadable.
func ParseNTLMToken(token string) (m NTLMMessage, ok bool) {
	token = strings.TrimSpace(token)
	if token == "" || len(token) > base64.StdEncoding.EncodedLen(maxNTLMToken) {
		return NTLMMessage{}, false
	}
	raw, err := base64.StdEncoding.DecodeString(token)
	if err != nil {
		if raw, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(token, "=")); err != nil {
			return NTLMMessage{}, false
		}
	}
	i := bytes.Index(raw, ntlmSignature)
	if i < 0 {
		return NTLMMessage{}, false
	}
	m, err = ParseNTLM(raw[i:])
	return m, err == nil
}
