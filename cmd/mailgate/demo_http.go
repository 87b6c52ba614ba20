package main

import (
	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/internal/demo"
)

// demoHTTP starts the embedded HTTP backends of the demo (ActiveSync, MAPI,
// EWS, Autodiscover and WebDAV in one server; a small webmail with a
// websocket) and sets cfg.HTTP so that the demo serves HTTPS and HTTP/3 on
// addr in front of them. An empty addr serves no HTTP.
func demoHTTP(cfg *configs.Config, addr string) (cleanup func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	hm, err := demo.StartHTTPMail("127.0.0.1:0", demo.Users, demo.HTTPMailOptions{})
	if err != nil {
		return nil, err
	}
	wm, err := demo.StartWebmail("127.0.0.1:0", demo.Users, demo.WebmailOptions{})
	if err != nil {
		hm.Close()
		return nil, err
	}
	mail := "http://" + hm.Addr()
	cfg.HTTP = &configs.HTTP{
		Listen: addr,
		EAS:    configs.HTTPRoute{Backend: mail},
		EWS:    configs.HTTPRoute{Backend: mail},
		MAPI:   configs.HTTPRoute{Backend: mail},
		WebDAV: configs.HTTPRoute{Backend: mail, Prefixes: []string{"/dav/", "/.well-known/caldav", "/.well-known/carddav"}},
		Webmail: configs.HTTPWebmail{
			HTTPRoute: configs.HTTPRoute{Backend: "http://" + wm.Addr()},
			LoginPath: demo.WebmailLoginPath, UserField: demo.WebmailUserField, Cookie: demo.WebmailCookie,
		},
	}
	return func() {
		hm.Close()
		wm.Close()
	}, nil
}
