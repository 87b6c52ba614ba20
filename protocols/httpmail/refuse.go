package httpmail

import (
	"encoding/json"
	"encoding/xml"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/protocols"
)

// Refusals, written in each protocol's terms (docs/protocols.md §6.6, §10):
//   - connect time: a blocked or locked-out IP gets 403, a connection limit
//     503 + Retry-After;
//   - login gate: a disabled user or domain and a brute-force lockout get
//     403 ("this user may not use this service"; 401 would make clients
//     prompt in a loop), a per-user connection limit 503 + Retry-After.
//
// Bodies: ActiveSync gets none (MS-ASHTTP §2.2.2.1.1: 403 means "not enabled
// for ActiveSync" and devices show their own text), but for a refused
// device a line of text (refuseDevice); EWS and Autodiscover
// get XML (a SOAP fault, or the POX Autodiscover error for
// autodiscover.xml); everyone else gets the JSON error shape of the admin
// API: {"error": {"code": …, "message": …}}.

func (s *Server) refuseConnect(w http.ResponseWriter, r *http.Request, rt *route, refusal string) {
	if refusal == protocols.RefuseLimit {
		w.Header().Set("Retry-After", strconv.Itoa(int(s.opts.retryAfter()/time.Second)))
		s.writeErrorCode(w, r, rt, http.StatusServiceUnavailable, "limit",
			"Too many connections from your address. Try again later.")
		return
	}
	s.writeErrorCode(w, r, rt, http.StatusForbidden, "blocked",
		"Connections from your address are blocked. Contact your administrator.")
}

func (s *Server) refuseLogin(w http.ResponseWriter, r *http.Request, rt *route, deny string) {
	switch deny {
	case protocols.DenyLimit:
		w.Header().Set("Retry-After", strconv.Itoa(int(s.opts.retryAfter()/time.Second)))
		s.writeErrorCode(w, r, rt, http.StatusServiceUnavailable, "limit",
			"Too many connections for this account. Try again later.")
	case protocols.DenyLockout:
		s.writeErrorCode(w, r, rt, http.StatusForbidden, "lockout",
			"Too many failed logins. Try again later.")
	case protocols.DenyUnavailable:
		w.Header().Set("Retry-After", strconv.Itoa(int(s.opts.retryAfter()/time.Second)))
		s.writeErrorCode(w, r, rt, http.StatusServiceUnavailable, "unavailable",
			"Login is temporarily unavailable. Try again later.")
	default:
		s.writeErrorCode(w, r, rt, http.StatusForbidden, "disabled",
			"This account may not use "+protocolName(rt.Protocol)+" here. Contact your administrator.")
	}
}

// refuseDevice answers an ActiveSync request whose device the device gate
// refused: 403, which is what Exchange answers a device its access rules
// block, with a line of text for whoever reads the device's logs.
func (s *Server) refuseDevice(w http.ResponseWriter, deny string) {
	msg := "This device is blocked from ActiveSync for this account by the administrator.\n"
	if deny == DenyDeviceType {
		msg = "This type of device may not use ActiveSync here. Contact your administrator.\n"
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(http.StatusForbidden)
	io.WriteString(w, msg)
}

// writeError answers a backend failure.
func (s *Server) writeError(w http.ResponseWriter, rt *route, status int, msg string) {
	s.writeErrorCode(w, nil, rt, status, "backend", msg)
}

func (s *Server) writeErrorCode(w http.ResponseWriter, r *http.Request, rt *route, status int, code, msg string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	switch {
	case rt.Protocol == ProtoEAS:
		h.Set("Content-Length", "0")
		w.WriteHeader(status)
	case rt.Protocol == ProtoEWS && r != nil && isPOXAutodiscover(r):
		h.Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(status)
		writePOXError(w, status, msg)
	case rt.Protocol == ProtoEWS:
		h.Set("Content-Type", "text/xml; charset=utf-8")
		w.WriteHeader(status)
		writeSOAPFault(w, msg)
	default:
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	}
}

func protocolName(p string) string {
	switch p {
	case ProtoEAS:
		return "ActiveSync"
	case ProtoEWS:
		return "Exchange Web Services"
	case ProtoMAPI:
		return "Outlook (MAPI)"
	case ProtoWebDAV:
		return "calendars and contacts (WebDAV)"
	}
	return "webmail"
}

func isPOXAutodiscover(r *http.Request) bool {
	p := strings.ToLower(r.URL.Path)
	return strings.Contains(p, "/autodiscover/") && strings.HasSuffix(p, ".xml")
}

func xmlText(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// writeSOAPFault writes a SOAP 1.1 fault (EWS and SOAP Autodiscover clients
// show faultstring).
func writeSOAPFault(w http.ResponseWriter, msg string) {
	w.Write([]byte(`<?xml version="1.0" encoding="utf-8"?>` +
		`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault>` +
		`<faultcode>s:Client</faultcode><faultstring xml:lang="en-US">` + xmlText(msg) + `</faultstring>` +
		`</s:Fault></s:Body></s:Envelope>`))
}

// writePOXError writes a POX Autodiscover error response (MS-OXDSCLI §2.2.4).
func writePOXError(w http.ResponseWriter, status int, msg string) {
	w.Write([]byte(`<?xml version="1.0" encoding="utf-8"?>` +
		`<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">` +
		`<Response><Error Time="` + time.Now().UTC().Format("15:04:05.0000000") + `" Id="0">` +
		`<ErrorCode>` + strconv.Itoa(status) + `</ErrorCode><Message>` + xmlText(msg) + `</Message><DebugData /></Error>` +
		`</Response></Autodiscover>`))
}
