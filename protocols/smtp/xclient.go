package smtp

import (
	"net/netip"
	"strconv"
	"strings"
)

// XCLIENT (Postfix XCLIENT_README) tells a backend that trusts the proxy
// who the real client is: "XCLIENT attribute=value ...", values in xtext
// (RFC 3461 §4). Postfix lists the attribute names it accepts after the
// XCLIENT keyword of its EHLO reply.

// xclientLine builds the XCLIENT command for the client address, the
// address it connected to, the protocol (ESMTP after EHLO, SMTP after HELO)
// and the client's HELO name. Only attributes the backend listed are sent;
// when it listed none, ADDR, PORT, PROTO and HELO are. The line stays within
// the 512-octet command limit: an over-long HELO name is sent as
// [UNAVAILABLE], and so is an empty one.
func xclientLine(client, local netip.AddrPort, esmtp bool, helo string, listed []string) string {
	want := func(attr string) bool {
		if len(listed) == 0 {
			return attr == "ADDR" || attr == "PORT" || attr == "PROTO" || attr == "HELO"
		}
		return containsFold(listed, attr)
	}
	var b strings.Builder
	b.WriteString("XCLIENT")
	add := func(attr, value string) {
		if want(attr) {
			b.WriteString(" " + attr + "=" + value)
		}
	}
	if client.IsValid() {
		add("ADDR", xclientAddr(client.Addr()))
		add("PORT", strconv.Itoa(int(client.Port())))
	} else {
		add("ADDR", "[UNAVAILABLE]")
	}
	if local.IsValid() {
		add("DESTADDR", xclientAddr(local.Addr()))
		add("DESTPORT", strconv.Itoa(int(local.Port())))
	}
	proto := "SMTP"
	if esmtp {
		proto = "ESMTP"
	}
	add("PROTO", proto)
	h := xtext(helo)
	if h == "" || b.Len()+len(" HELO=")+len(h)+2 > maxCommandLine {
		h = "[UNAVAILABLE]"
	}
	add("HELO", h)
	return b.String()
}

// xclientAddr writes an address the way XCLIENT wants it: IPv4 dotted, IPv6
// with the "IPV6:" prefix of RFC 5321 address literals.
func xclientAddr(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() {
		return "IPV6:" + a.WithZone("").String()
	}
	return a.String()
}

// xtext encodes s (RFC 3461 §4): printable ASCII except "+" and "=" stands
// for itself, every other octet is "+" and two upper-case hex digits.
func xtext(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('+')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
