package protocols

// The names every part of mailgate shares, each defined here once:
// accounting counts by these protocol keys, the admin API and the page show
// them, the HTTP routes and the stream handlers report them; the TLS modes
// are what the config's tls keys take.

// Protocol keys.
const (
	ProtoSMTP    = "smtp"
	ProtoIMAP    = "imap"
	ProtoPOP     = "pop"
	ProtoXMPP    = "xmpp"
	ProtoEAS     = "eas"
	ProtoMAPI    = "mapi"
	ProtoEWS     = "ews" // Autodiscover is counted as EWS
	ProtoWebDAV  = "webdav"
	ProtoWebmail = "webmail"
)

// Keys are the protocol keys in the order of the admin page's tabs.
var Keys = []string{ProtoSMTP, ProtoIMAP, ProtoPOP, ProtoXMPP, ProtoEAS, ProtoMAPI, ProtoEWS, ProtoWebDAV, ProtoWebmail}

// TLSMode is how a link is secured, toward the client or the backend.
type TLSMode string

const (
	TLSNone     TLSMode = "none"     // plain TCP
	TLSStartTLS TLSMode = "starttls" // plain, upgraded by the protocol's STARTTLS (STLS, <starttls/>)
	TLSImplicit TLSMode = "implicit" // TLS from the first byte
)

// TLSModes lists the valid modes, for validation messages.
var TLSModes = []TLSMode{TLSNone, TLSStartTLS, TLSImplicit}
