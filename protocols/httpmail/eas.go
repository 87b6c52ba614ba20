package httpmail

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"unicode"
)

// EASQuery is what an ActiveSync request line says about the device and
// the command (MS-ASHTTP §2.2.1.1.1). User is informational ("a format that
// can be logged"); the identity is the Authorization header.
type EASQuery struct {
	Cmd        string // command name, e.g. "Ping", "FolderSync"
	User       string
	DeviceID   string
	DeviceType string
	// Version is the protocol version of a base64 query (e.g. 140 for
	// 14.0); 0 for the plain form, which carries it in a header.
	Version int
	Base64  bool
}

// easCommands maps the command codes of the base64 form to names
// (MS-ASHTTP §2.2.1.1.1.1.2).
var easCommands = map[byte]string{
	0: "Sync", 1: "SendMail", 2: "SmartForward", 3: "SmartReply", 4: "GetAttachment",
	9: "FolderSync", 10: "FolderCreate", 11: "FolderDelete", 12: "FolderUpdate",
	13: "MoveItems", 14: "GetItemEstimate", 15: "MeetingResponse", 16: "Search",
	17: "Settings", 18: "Ping", 19: "ItemOperations", 20: "Provision",
	21: "ResolveRecipients", 22: "ValidateCert",
}

// easParamUser is the command parameter tag of the user in the base64 form
// (MS-ASHTTP §2.2.1.1.1.1.3).
const easParamUser = 8

// maxEASQuery bounds the query the base64 decoder looks at.
const maxEASQuery = 4096

// ParseEASQuery reads the plain (Cmd=…&User=…&DeviceId=…&DeviceType=…) or
// the base64 form of an ActiveSync query. ok is false when it is neither.
func ParseEASQuery(rawQuery string) (q EASQuery, ok bool) {
	if rawQuery == "" || len(rawQuery) > maxEASQuery {
		return EASQuery{}, false
	}
	if strings.Contains(rawQuery, "&") || strings.Contains(strings.TrimRight(rawQuery, "="), "=") {
		vals, err := url.ParseQuery(rawQuery)
		if err == nil {
			for k, v := range vals {
				if len(v) == 0 {
					continue
				}
				switch strings.ToLower(k) {
				case "cmd":
					q.Cmd = v[0]
				case "user":
					q.User = v[0]
				case "deviceid":
					q.DeviceID = v[0]
				case "devicetype":
					q.DeviceType = v[0]
				}
			}
			if q.Cmd != "" || q.DeviceID != "" {
				return q, true
			}
		}
	}
	q, err := DecodeEASBase64Query(rawQuery)
	return q, err == nil
}

var errEASQuery = errors.New("eas: malformed base64 query")

// DecodeEASBase64Query decodes the base64 query form (MS-ASHTTP
// §2.2.1.1.1.1): version, command code, locale, device id, policy key,
// device type, then tag/length/value command parameters.
func DecodeEASBase64Query(rawQuery string) (EASQuery, error) {
	if len(rawQuery) > maxEASQuery {
		return EASQuery{}, errEASQuery
	}
	s, err := url.PathUnescape(rawQuery) // keeps '+', which is base64
	if err != nil {
		return EASQuery{}, errEASQuery
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
			if b, err = base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")); err != nil {
				return EASQuery{}, errEASQuery
			}
		}
	}
	r := easReader{b: b}
	q := EASQuery{Base64: true}
	q.Version = int(r.byte())
	code := r.byte()
	r.skip(2) // locale, little-endian
	q.DeviceID = printable(r.lenPrefixed())
	if pk := r.lenPrefixed(); len(pk) != 0 && len(pk) != 4 {
		return EASQuery{}, errEASQuery
	}
	q.DeviceType = printable(r.lenPrefixed())
	for !r.bad && r.left() > 0 {
		tag := r.byte()
		val := r.lenPrefixed()
		if tag == easParamUser {
			q.User = printable(val)
		}
	}
	if r.bad {
		return EASQuery{}, errEASQuery
	}
	name, known := easCommands[code]
	if !known {
		name = "cmd" + strconv.Itoa(int(code))
	}
	q.Cmd = name
	return q, nil
}

// easReader walks the decoded query; any overrun sets bad.
type easReader struct {
	b   []byte
	off int
	bad bool
}

func (r *easReader) left() int { return len(r.b) - r.off }

func (r *easReader) byte() byte {
	if r.left() < 1 {
		r.bad = true
		return 0
	}
	c := r.b[r.off]
	r.off++
	return c
}

func (r *easReader) skip(n int) {
	if r.left() < n {
		r.bad = true
		return
	}
	r.off += n
}

func (r *easReader) lenPrefixed() []byte {
	n := int(r.byte())
	if r.bad || r.left() < n {
		r.bad = true
		return nil
	}
	v := r.b[r.off : r.off+n]
	r.off += n
	return v
}

// printable renders an identifier for logs and accounting: text as is,
// binary as hex.
func printable(b []byte) string {
	for _, c := range string(b) {
		if c == unicode.ReplacementChar || !unicode.IsPrint(c) {
			return hex.EncodeToString(b)
		}
	}
	return string(b)
}

// easLongPoll reports whether an ActiveSync command may hold the request
// for its heartbeat or wait interval (Ping; Sync with Wait or
// HeartbeatInterval, MS-ASCMD §2.2.3.198, §2.2.3.88).
func easLongPoll(cmd string) bool {
	return strings.EqualFold(cmd, "Ping") || strings.EqualFold(cmd, "Sync")
}
