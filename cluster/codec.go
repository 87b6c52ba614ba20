package cluster

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// The views' big answers (connection lists, tab rows) travel in a compact
// binary form: JSON of 33 000 connections is 7 MB and took 130 ms to
// decode, this is a third of the size and decodes in a tenth of the time
// (BENCHMARKS.md, cluster). Strings are length-prefixed, numbers varints,
// times Unix nanoseconds (0: the zero time).

var errShort = errors.New("cluster: truncated view data")

type enc struct{ b []byte }

func (e *enc) uint(v uint64) { e.b = binary.AppendUvarint(e.b, v) }
func (e *enc) int(v int64)   { e.b = binary.AppendVarint(e.b, v) }
func (e *enc) str(s string)  { e.uint(uint64(len(s))); e.b = append(e.b, s...) }
func (e *enc) bool(v bool) {
	if v {
		e.b = append(e.b, 1)
	} else {
		e.b = append(e.b, 0)
	}
}
func (e *enc) time(t time.Time) {
	if t.IsZero() {
		e.int(0)
		return
	}
	e.int(t.UnixNano())
}
func (e *enc) addr(a netip.Addr) {
	b, _ := a.MarshalBinary()
	e.uint(uint64(len(b)))
	e.b = append(e.b, b...)
}

type dec struct {
	b   []byte
	err error
}

func (d *dec) uint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}
func (d *dec) int() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}
func (d *dec) bytes() []byte {
	n := d.uint()
	if uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}
func (d *dec) str() string { return string(d.bytes()) }
func (d *dec) bool() bool {
	if len(d.b) == 0 {
		d.fail()
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}
func (d *dec) time() time.Time {
	ns := d.int()
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}
func (d *dec) addr() netip.Addr {
	var a netip.Addr
	if err := a.UnmarshalBinary(d.bytes()); err != nil {
		d.fail()
	}
	return a
}
func (d *dec) fail() {
	if d.err == nil {
		d.err = errShort
	}
	d.b = nil
}

// interned keeps one copy of the short strings that repeat in every row
// (protocol, listener, state, mechanism).
type interned map[string]string

func (m interned) get(b []byte) string {
	if s, ok := m[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	m[s] = s
	return s
}

func encodeInfos(infos []accounting.Info) []byte {
	e := enc{b: make([]byte, 0, 64*len(infos)+8)}
	e.uint(uint64(len(infos)))
	for _, i := range infos {
		e.uint(i.ID)
		e.str(i.Protocol)
		e.str(i.Listener)
		e.str(i.User)
		e.addr(i.Client.Addr())
		e.uint(uint64(i.Client.Port()))
		e.str(i.State)
		e.bool(i.TLS)
		e.str(i.Mechanism)
		e.time(i.StartedAt)
		e.time(i.AuthenticatedAt)
		e.str(i.Device)
	}
	return e.b
}

func decodeInfos(b []byte) ([]accounting.Info, error) {
	d := dec{b: b}
	n := d.uint()
	if n > uint64(len(b)) {
		return nil, errShort
	}
	out := make([]accounting.Info, 0, n)
	in := interned{}
	for k := uint64(0); k < n && d.err == nil; k++ {
		var i accounting.Info
		i.ID = d.uint()
		i.Protocol = in.get(d.bytes())
		i.Listener = in.get(d.bytes())
		i.User = d.str()
		ip := d.addr()
		i.Client = netip.AddrPortFrom(ip, uint16(d.uint()))
		i.State = in.get(d.bytes())
		i.TLS = d.bool()
		i.Mechanism = in.get(d.bytes())
		i.StartedAt = d.time()
		i.AuthenticatedAt = d.time()
		i.Device = d.str()
		out = append(out, i)
	}
	return out, d.err
}

func encodeRows(rows []accounting.UserRow) []byte {
	e := enc{b: make([]byte, 0, 64*len(rows)+8)}
	e.uint(uint64(len(rows)))
	for _, r := range rows {
		e.str(r.User)
		e.uint(uint64(len(r.Protocols)))
		for _, p := range r.Protocols {
			e.str(p)
		}
		e.bool(r.ProtocolEnabled)
		e.bool(r.DomainEnabled)
		e.uint(uint64(r.Connections))
		e.uint(uint64(len(r.IPs)))
		for _, c := range r.IPs {
			e.addr(c.IP)
			e.uint(uint64(c.Count))
		}
		e.int(int64(r.Duration))
		e.time(r.LastLogin)
		e.addr(r.LastIP)
	}
	return e.b
}

func decodeRows(b []byte) ([]accounting.UserRow, error) {
	d := dec{b: b}
	n := d.uint()
	if n > uint64(len(b)) {
		return nil, errShort
	}
	out := make([]accounting.UserRow, 0, n)
	in := interned{}
	for k := uint64(0); k < n && d.err == nil; k++ {
		var r accounting.UserRow
		r.User = d.str()
		np := d.uint()
		for j := uint64(0); j < np && d.err == nil; j++ {
			r.Protocols = append(r.Protocols, in.get(d.bytes()))
		}
		r.ProtocolEnabled = d.bool()
		r.DomainEnabled = d.bool()
		r.Connections = int(d.uint())
		ni := d.uint()
		if ni > uint64(len(d.b)) {
			return out, errShort
		}
		r.IPs = make([]accounting.IPCount, 0, ni)
		for j := uint64(0); j < ni && d.err == nil; j++ {
			ip := d.addr()
			r.IPs = append(r.IPs, accounting.IPCount{IP: ip, Count: int(d.uint())})
		}
		r.Duration = time.Duration(d.int())
		r.LastLogin = d.time()
		r.LastIP = d.addr()
		out = append(out, r)
	}
	return out, d.err
}
