package configs

// HTTP configures the HTTP mail protocols listener (EAS, MAPI, EWS,
// WebDAV/CalDAV/CardDAV, Autodiscover, webmail). Owned by the HTTP work;
// this is a placeholder until it lands.
type HTTP struct{}

func (h *HTTP) setDefaults() {}

func (h *HTTP) validate(haveCerts bool) error { return nil }
