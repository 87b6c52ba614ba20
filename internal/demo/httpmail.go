package demo

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// HTTPMailOptions configure the demo HTTP mail server.
type HTTPMailOptions struct {
	// MaxHold caps how long a long poll is held: an EAS Ping's heartbeat, a
	// MAPI NotificationWait, an EWS GetStreamingEvents (default 1h; tests
	// set it short).
	MaxHold time.Duration
	// Pending is the MAPI keep-alive interval and the EWS streaming
	// keep-alive (default 30s).
	Pending time.Duration
}

// HTTPMailBackend plays the HTTP mail servers mailgate fronts, with Basic
// auth against the demo users (401 on a bad password):
//   - ActiveSync at /Microsoft-Server-ActiveSync: OPTIONS lists the
//     versions; FolderSync answers one Inbox; Ping holds for its heartbeat
//     (the HeartbeatInterval in its WBXML body, or ?heartbeat=N seconds;
//     capped by MaxHold) and returns status 1 (no changes);
//   - MAPI over HTTP at /mapi/: NotificationWait is held (chunked
//     PROCESSING, PENDING… DONE), other request types answer at once;
//   - EWS at /EWS/Exchange.asmx: a SOAP answer; GetStreamingEvents is held
//     for its ConnectionTimeout (minutes) capped by MaxHold;
//   - Autodiscover at /autodiscover/autodiscover.xml (POX);
//   - WebDAV at /dav/: PROPFIND and REPORT answer 207 with the user's
//     principal, GET a short text page. (mailgate itself answers
//     /.well-known/caldav and /.well-known/carddav with a redirect here.)
type HTTPMailBackend struct {
	srv   *http.Server
	ln    net.Listener
	users map[string]string
	opts  HTTPMailOptions
}

// StartHTTPMail serves the demo HTTP mail server on addr (127.0.0.1:0 for
// any port).
func StartHTTPMail(addr string, users map[string]string, opts HTTPMailOptions) (*HTTPMailBackend, error) {
	if opts.MaxHold <= 0 {
		opts.MaxHold = time.Hour
	}
	if opts.Pending <= 0 {
		opts.Pending = 30 * time.Second
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	b := &HTTPMailBackend{ln: ln, users: users, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("/Microsoft-Server-ActiveSync", b.auth(b.eas))
	mux.HandleFunc("/mapi/", b.auth(b.mapi))
	mux.HandleFunc("/EWS/", b.auth(b.ews))
	mux.HandleFunc("/autodiscover/", b.auth(b.autodiscover))
	mux.HandleFunc("/Autodiscover/", b.auth(b.autodiscover))
	mux.HandleFunc("/dav/", b.auth(b.dav))
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go b.srv.Serve(ln)
	return b, nil
}

// Addr is the backend's address.
func (b *HTTPMailBackend) Addr() string { return b.ln.Addr().String() }

// Close stops the server (held requests end).
func (b *HTTPMailBackend) Close() error { return b.srv.Close() }

func (b *HTTPMailBackend) auth(h func(http.ResponseWriter, *http.Request, string)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if want, known := b.users[u]; !ok || !known || want != p {
			w.Header().Set("WWW-Authenticate", `Basic realm="mailgate demo", charset="UTF-8"`)
			http.Error(w, "401 Unauthorized", http.StatusUnauthorized)
			return
		}
		h(w, r, u)
	}
}

// hold waits for d (capped by MaxHold) or until the request ends; tick
// runs every Pending while it waits.
func (b *HTTPMailBackend) hold(r *http.Request, d time.Duration, tick func()) {
	d = min(d, b.opts.MaxHold)
	end := time.NewTimer(d)
	defer end.Stop()
	t := time.NewTicker(b.opts.Pending)
	defer t.Stop()
	for {
		select {
		case <-end.C:
			return
		case <-r.Context().Done():
			return
		case <-t.C:
			if tick != nil {
				tick()
			}
		}
	}
}

// WBXML (MS-ASWBXML): header version 1.3, public id 1, UTF-8, no string
// table; SWITCH_PAGE 0x00, STR_I 0x03, END 0x01; tokens with content +0x40.
var wbxmlHeader = []byte{0x03, 0x01, 0x6a, 0x00}

const (
	wbxSwitchPage = 0x00
	wbxEnd        = 0x01
	wbxStrI       = 0x03
	wbxContent    = 0x40
	pageFolder    = 7  // FolderHierarchy
	pagePing      = 13 // Ping
)

// Ping code page tokens.
const (
	tokPing              = 0x05
	tokPingStatus        = 0x07
	tokHeartbeatInterval = 0x08
)

// FolderHierarchy code page tokens.
const (
	tokDisplayName = 0x07
	tokServerID    = 0x08
	tokParentID    = 0x09
	tokType        = 0x0a
	tokFStatus     = 0x0c
	tokChanges     = 0x0e
	tokAdd         = 0x0f
	tokSyncKey     = 0x12
	tokFolderSync  = 0x16
	tokCount       = 0x17
)

type wbxml struct{ bytes.Buffer }

func (w *wbxml) page(p byte)   { w.WriteByte(wbxSwitchPage); w.WriteByte(p) }
func (w *wbxml) open(tok byte) { w.WriteByte(tok | wbxContent) }
func (w *wbxml) end()          { w.WriteByte(wbxEnd) }
func (w *wbxml) text(tok byte, s string) {
	w.open(tok)
	w.WriteByte(wbxStrI)
	w.WriteString(s)
	w.WriteByte(0)
	w.end()
}

// heartbeat finds the HeartbeatInterval of a WBXML Ping request (seconds).
func heartbeat(body []byte) (int, bool) {
	if len(body) < 4 {
		return 0, false
	}
	page := byte(0)
	for i := 4; i < len(body); i++ {
		switch c := body[i]; {
		case c == wbxSwitchPage && i+1 < len(body):
			page = body[i+1]
			i++
		case page == pagePing && c == tokHeartbeatInterval|wbxContent && i+2 < len(body) && body[i+1] == wbxStrI:
			end := bytes.IndexByte(body[i+2:], 0)
			if end < 0 {
				return 0, false
			}
			n, err := strconv.Atoi(string(body[i+2 : i+2+end]))
			return n, err == nil && n > 0
		}
	}
	return 0, false
}

// easCommand reads Cmd from the plain query or the base64 query's command
// code (MS-ASHTTP §2.2.1.1.1.1.2: 9 FolderSync, 18 Ping).
func easCommand(r *http.Request) string {
	if c := r.URL.Query().Get("Cmd"); c != "" {
		return c
	}
	raw, err := base64.StdEncoding.DecodeString(r.URL.RawQuery)
	if err != nil || len(raw) < 2 {
		return ""
	}
	switch raw[1] {
	case 9:
		return "FolderSync"
	case 18:
		return "Ping"
	}
	return "cmd" + strconv.Itoa(int(raw[1]))
}

func (b *HTTPMailBackend) eas(w http.ResponseWriter, r *http.Request, user string) {
	w.Header().Set("MS-Server-ActiveSync", "14.1")
	if r.Method == http.MethodOptions {
		w.Header().Set("MS-ASProtocolVersions", "2.5,12.0,12.1,14.0,14.1")
		w.Header().Set("MS-ASProtocolCommands", "Sync,SendMail,SmartForward,SmartReply,GetAttachment,FolderSync,FolderCreate,FolderDelete,FolderUpdate,MoveItems,GetItemEstimate,MeetingResponse,Search,Settings,Ping,ItemOperations,Provision,ResolveRecipients,ValidateCert")
		return
	}
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	var out wbxml
	out.Write(wbxmlHeader)
	switch easCommand(r) {
	case "FolderSync":
		out.page(pageFolder)
		out.open(tokFolderSync)
		out.text(tokFStatus, "1")
		out.text(tokSyncKey, "1")
		out.open(tokChanges)
		out.text(tokCount, "1")
		out.open(tokAdd)
		out.text(tokServerID, "1")
		out.text(tokParentID, "0")
		out.text(tokDisplayName, "Inbox")
		out.text(tokType, "2")
		out.end()
		out.end()
		out.end()
	case "Ping":
		secs, ok := heartbeat(body)
		if q, err := strconv.Atoi(r.URL.Query().Get("heartbeat")); err == nil && q > 0 {
			secs, ok = q, true
		}
		if !ok {
			secs = 480
		}
		b.hold(r, time.Duration(secs)*time.Second, nil)
		out.page(pagePing)
		out.open(tokPing)
		out.text(tokPingStatus, "1") // the heartbeat expired without changes
		out.end()
	default:
		http.Error(w, "command not in the demo", http.StatusNotImplemented)
		return
	}
	w.Header().Set("Content-Type", "application/vnd.ms-sync.wbxml")
	w.Write(out.Bytes())
}

func (b *HTTPMailBackend) mapi(w http.ResponseWriter, r *http.Request, user string) {
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	kind := r.Header.Get("X-RequestType")
	h := w.Header()
	h.Set("Content-Type", "application/mapi-http")
	h.Set("X-RequestType", kind)
	h.Set("X-ResponseCode", "0")
	h.Set("X-PendingPeriod", strconv.Itoa(int(b.opts.Pending/time.Millisecond)))
	if rid := r.Header.Get("X-RequestId"); rid != "" {
		h.Set("X-RequestId", rid)
	}
	if ci := r.Header.Get("X-ClientInfo"); ci != "" {
		h.Set("X-ClientInfo", ci)
	}
	fl, _ := w.(http.Flusher)
	io.WriteString(w, "PROCESSING\r\n")
	if fl != nil {
		fl.Flush()
	}
	if strings.EqualFold(kind, "NotificationWait") {
		wait := 5 * time.Minute
		if q, err := strconv.Atoi(r.URL.Query().Get("wait")); err == nil && q > 0 {
			wait = time.Duration(q) * time.Second
		}
		b.hold(r, wait, func() {
			io.WriteString(w, "PENDING\r\n")
			if fl != nil {
				fl.Flush()
			}
		})
	}
	fmt.Fprintf(w, "DONE\r\nX-ResponseCode: 0\r\nX-ElapsedTime: 0\r\n\r\n")
}

var connectionTimeout = regexp.MustCompile(`ConnectionTimeout>\s*(\d+)\s*<`)

func (b *HTTPMailBackend) ews(w http.ResponseWriter, r *http.Request, user string) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	const head = `<?xml version="1.0" encoding="utf-8"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>`
	if bytes.Contains(body, []byte("GetStreamingEvents")) {
		minutes := 30
		if m := connectionTimeout.FindSubmatch(body); m != nil {
			minutes, _ = strconv.Atoi(string(m[1]))
		}
		fl, _ := w.(http.Flusher)
		io.WriteString(w, head+`<m:GetStreamingEventsResponse xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessages>`)
		if fl != nil {
			fl.Flush()
		}
		b.hold(r, time.Duration(minutes)*time.Minute, func() {
			io.WriteString(w, `<m:GetStreamingEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:ConnectionStatus>OK</m:ConnectionStatus></m:GetStreamingEventsResponseMessage>`)
			if fl != nil {
				fl.Flush()
			}
		})
		io.WriteString(w, `<m:GetStreamingEventsResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode><m:ConnectionStatus>Closed</m:ConnectionStatus></m:GetStreamingEventsResponseMessage></m:ResponseMessages></m:GetStreamingEventsResponse></s:Body></s:Envelope>`)
		return
	}
	io.WriteString(w, head+`<m:ResponseMessages xmlns:m="http://schemas.microsoft.com/exchange/services/2006/messages"><m:ResponseMessage ResponseClass="Success"><m:ResponseCode>NoError</m:ResponseCode></m:ResponseMessage></m:ResponseMessages></s:Body></s:Envelope>`)
}

func (b *HTTPMailBackend) autodiscover(w http.ResponseWriter, r *http.Request, user string) {
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006">
<Response xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a">
<User><DisplayName>%s</DisplayName><AutoDiscoverSMTPAddress>%s</AutoDiscoverSMTPAddress></User>
<Account><AccountType>email</AccountType><Action>settings</Action>
<Protocol><Type>EXCH</Type><EwsUrl>https://%s/EWS/Exchange.asmx</EwsUrl></Protocol>
</Account></Response></Autodiscover>
`, html.EscapeString(user), html.EscapeString(user), html.EscapeString(r.Host))
}

func (b *HTTPMailBackend) dav(w http.ResponseWriter, r *http.Request, user string) {
	io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("DAV", "1, 2, 3, calendar-access, addressbook")
		w.Header().Set("Allow", "OPTIONS, GET, HEAD, PROPFIND, REPORT")
	case http.MethodGet, http.MethodHead:
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "mailgate demo WebDAV: %s, signed in as %s. CalDAV/CardDAV clients PROPFIND this URL.\n", r.URL.Path, user)
	case "PROPFIND", "REPORT":
		w.Header().Set("Content-Type", "application/xml; charset=utf-8")
		w.WriteHeader(http.StatusMultiStatus)
		p := html.EscapeString("/dav/" + user + "/")
		fmt.Fprintf(w, `<?xml version="1.0" encoding="utf-8"?>
<d:multistatus xmlns:d="DAV:"><d:response><d:href>%s</d:href><d:propstat><d:prop>
<d:current-user-principal><d:href>%s</d:href></d:current-user-principal>
<d:resourcetype><d:collection/></d:resourcetype></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>
`, html.EscapeString(r.URL.Path), p)
	default:
		http.Error(w, "not in the demo", http.StatusMethodNotAllowed)
	}
}
