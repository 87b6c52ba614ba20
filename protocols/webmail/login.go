package webmail

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
)

// loginMatch reports whether r submits the login form: a POST to the login
// path (compared without case) carrying the query parameters the login path
// names (Roundcube: "/?_task=login").
func (m *Webmail) loginMatch(r *http.Request) bool {
	if r.Method != http.MethodPost || !strings.EqualFold(r.URL.Path, m.loginPath) {
		return false
	}
	if len(m.loginQuery) == 0 {
		return true
	}
	q := r.URL.Query()
	for k, vs := range m.loginQuery {
		for _, v := range vs {
			if q.Get(k) != v {
				return false
			}
		}
	}
	return true
}

// LoginUser returns the username a login submission carries: the
// configured field of an urlencoded or multipart form, or a top-level JSON
// string (SOGo posts JSON). The body is read up to MaxLoginBody and put
// back for forwarding; the password in it is neither parsed out nor kept.
func (m *Webmail) LoginUser(r *http.Request) (string, bool) {
	if !m.loginMatch(r) || r.Body == nil || r.Body == http.NoBody {
		return "", false
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, m.maxBody+1))
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
	if err != nil || int64(len(buf)) > m.maxBody {
		return "", false
	}
	user := strings.TrimSpace(m.fieldValue(r.Header.Get("Content-Type"), buf))
	if user == "" || strings.ContainsAny(user, "\r\n\x00") || len(user) > 320 {
		return "", false
	}
	return user, true
}

func (m *Webmail) fieldValue(contentType string, body []byte) string {
	mt, params, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/x-www-form-urlencoded" || mt == "":
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return ""
		}
		return vals.Get(m.userField)
	case mt == "multipart/form-data":
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextPart()
			if err != nil {
				return ""
			}
			if p.FormName() == m.userField && p.FileName() == "" {
				v, _ := io.ReadAll(io.LimitReader(p, 1024))
				return string(v)
			}
		}
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		var obj map[string]json.RawMessage
		if json.Unmarshal(body, &obj) != nil {
			return ""
		}
		var v string
		if json.Unmarshal(obj[m.userField], &v) != nil {
			return ""
		}
		return v
	}
	return ""
}
