package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"

	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/protocols/httpmail"
	"github.com/mailgate/mailgate/proxy"
)

// What a reload does to the stream listeners and the HTTP routes. Every
// step that can fail (options built, new sockets bound, routes checked)
// runs before anything running is changed; when one fails, what it opened
// is closed again and the running configuration stays whole.

// listenerPlan says what a reload does to the stream listeners: listeners
// of new names (or of a new address) are opened, listeners gone from the
// config stop accepting (their sessions go on), the others get their new
// options for the sessions they accept from then on.
type listenerPlan struct {
	open    []proxy.ListenerOptions
	update  []listenerUpdate
	stop    []*proxy.Listener
	changes []string // for the log and the API: "+name", "-name", "~name"
}

type listenerUpdate struct {
	l    *proxy.Listener
	opts proxy.ListenerOptions
}

// planListeners compares the running listeners (by name, as configured in
// cur) with next. A listener keeps its socket when its name, or else its
// address, matches a running one with the same protocol and address.
func planListeners(running map[string]*proxy.Listener, cur, next []configs.Listener, node string, serverTLS *tls.Config) (*listenerPlan, error) {
	p := &listenerPlan{}
	curBy := map[string]configs.Listener{}
	for _, lc := range cur {
		curBy[lc.Name] = lc
	}
	kept := map[string]bool{}
	for i, lc := range next {
		opts, err := listenerOptions(lc, node, serverTLS)
		if err != nil {
			return nil, fmt.Errorf("listeners[%d] (%s): %w", i, lc.Name, err)
		}
		// The same socket: the address as configured, or as bound (an
		// ephemeral :0 written down as the port it got).
		// Port 0 is a new port each time: only the same name keeps it.
		ephemeral := strings.HasSuffix(lc.Listen, ":0")
		sameSocket := func(o configs.Listener) bool {
			if o.Protocol != lc.Protocol {
				return false
			}
			if l := running[o.Name]; l != nil && l.Addr().String() == lc.Listen {
				return true
			}
			return o.Listen == lc.Listen && (!ephemeral || o.Name == lc.Name)
		}
		old, same := curBy[lc.Name]
		if !same || !sameSocket(old) {
			// A listener renamed on the same address keeps its socket.
			same = false
			for _, o := range cur {
				if !kept[o.Name] && sameSocket(o) && !nameIn(next, o.Name) {
					old, same = o, true
					break
				}
			}
		}
		if !same {
			p.open = append(p.open, opts)
			p.changes = append(p.changes, "+"+lc.Name)
			continue
		}
		kept[old.Name] = true
		l := running[old.Name]
		if l == nil {
			return nil, fmt.Errorf("listeners[%d] (%s): no running listener %q", i, lc.Name, old.Name)
		}
		opts.Address = l.Options().Address // the socket stays
		cmp := lc
		cmp.Listen = old.Listen
		if !reflect.DeepEqual(old, cmp) {
			p.update = append(p.update, listenerUpdate{l, opts})
			p.changes = append(p.changes, "~"+lc.Name)
		}
	}
	for _, o := range cur {
		if !kept[o.Name] {
			p.stop = append(p.stop, running[o.Name])
			p.changes = append(p.changes, "-"+o.Name)
		}
	}
	return p, nil
}

func nameIn(ls []configs.Listener, name string) bool {
	return slices.ContainsFunc(ls, func(l configs.Listener) bool { return l.Name == name })
}

// openListeners binds the plan's new listeners; on a failure it closes
// those it opened and returns the error.
func (a *app) openListeners(p *listenerPlan) ([]*proxy.Listener, error) {
	var opened []*proxy.Listener
	for _, o := range p.open {
		l, err := a.srv.Listen(o)
		if err != nil {
			for _, x := range opened {
				x.Stop()
			}
			return nil, err
		}
		opened = append(opened, l)
	}
	return opened, nil
}

// commitListeners applies the rest of the plan once the new listeners are
// bound: stops the removed ones, updates the changed ones, and returns the
// running set by name.
func commitListeners(running map[string]*proxy.Listener, p *listenerPlan, opened []*proxy.Listener) (map[string]*proxy.Listener, error) {
	var errs []error
	next := map[string]*proxy.Listener{}
	for name, l := range running {
		next[name] = l
	}
	for _, l := range p.stop {
		l.Stop()
		delete(next, l.Name())
	}
	for _, u := range p.update {
		old := u.l.Name()
		if err := u.l.Update(u.opts); err != nil {
			errs = append(errs, err) // checked when planned: a bug if it happens
			continue
		}
		delete(next, old)
		next[u.l.Name()] = u.l
	}
	for _, l := range opened {
		next[l.Name()] = l
	}
	return next, errors.Join(errs...)
}

// httpRoutes builds the routes of an http section: every protocol with a
// backend, in a fixed order, and their names.
func httpRoutes(h *configs.HTTP) ([]httpmail.Route, []string, error) {
	var routes []httpmail.Route
	var served []string
	for _, nr := range h.Routes() {
		r := nr.Route
		if r.Backend == "" {
			continue
		}
		u, err := url.Parse(r.Backend) // validated
		if err != nil {
			return nil, nil, fmt.Errorf("http.%s.backend: %w", nr.Protocol, err)
		}
		route := httpmail.Route{Protocol: nr.Protocol, Prefixes: r.Prefixes, Backend: u,
			StripPrefix: r.StripPrefix, PreserveHost: r.PreserveHost, RewriteURLs: r.RewriteURLs}
		if nr.Protocol == httpmail.ProtoWebmail {
			route.Host = h.Webmail.Host
		}
		if u.Scheme == "https" {
			if route.TLS, err = clientTLS(u.Hostname(), r.ServerName, r.CAFile, r.InsecureSkipVerify); err != nil {
				return nil, nil, fmt.Errorf("http.%s: %w", nr.Protocol, err)
			}
		}
		routes = append(routes, route)
		served = append(served, nr.Protocol)
	}
	return routes, served, nil
}

// httpFrontKeys reports which keys of the http section other than the
// routes differ between a and b: those need a restart (the listeners, the
// PROXY and forwarder trust, the timeouts, the webmail session settings).
// nil and non-nil sections differ in "http".
func httpFrontKeys(a, b *configs.HTTP) []string {
	if (a == nil) != (b == nil) {
		return []string{"http"}
	}
	if a == nil {
		return nil
	}
	x, y := *a, *b
	for _, h := range []*configs.HTTP{&x, &y} {
		h.EAS, h.EWS, h.MAPI, h.WebDAV = configs.HTTPRoute{}, configs.HTTPRoute{}, configs.HTTPRoute{}, configs.HTTPRoute{}
		h.Webmail.HTTPRoute = configs.HTTPRoute{}
		h.Webmail.Host = ""
	}
	var keys []string
	for _, d := range []struct {
		key  string
		a, b any
	}{
		{"http.listen", x.Listen, y.Listen}, {"http.http3", x.HTTP3, y.HTTP3}, {"http.plain_listen", x.PlainListen, y.PlainListen},
		{"http.proxy_protocol", x.ProxyProtocol, y.ProxyProtocol}, {"http.trusted_forwarders", x.TrustedForwarders, y.TrustedForwarders},
		{"http.timeouts", x.Timeouts, y.Timeouts}, {"http.max_header_bytes", x.MaxHeaderBytes, y.MaxHeaderBytes},
		{"http.webmail", x.Webmail, y.Webmail},
	} {
		if !reflect.DeepEqual(d.a, d.b) {
			keys = append(keys, d.key)
		}
	}
	sort.Strings(keys)
	return keys
}
