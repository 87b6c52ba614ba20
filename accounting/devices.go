package accounting

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/golang-lru/v2/simplelru"
	"github.com/mailgate/mailgate/protocols"
)

// ActiveSync devices. An EAS request names its device (DeviceId and
// DeviceType in its query, the User-Agent header); the HTTP front hands
// that to its connection's CheckDevice before anything is forwarded. Two
// things come of it:
//
//   - the book of devices seen: per user, the devices whose requests the
//     backend accepted (first and last seen, last IP, last command, the
//     User-Agent), bounded per user (the device seen longest ago goes
//     first) and in users (an LRU per shard, as the login history), kept in
//     the state file and read back when a user comes back into memory;
//   - the device policy, checked by CheckDevice: the devices an
//     administrator blocked (per user, committed to the state file before
//     they apply, never forgotten by a bound) and the device types the
//     configuration allows or refuses (SetDeviceTypes).
//
// A device is matched by its DeviceId without regard to case. Nothing here
// authenticates a device: a client that sends another DeviceId is another
// device, which is why the type lists and the per-protocol switch exist.

// Device book bounds by default.
const (
	DefaultDevicesPerUser = 100
	DefaultDeviceUsers    = 100000
)

// Why CheckDevice refuses a request: the gate reasons of the login history
// and the refusal counters (the same strings).
const (
	GateDeviceBlocked   = "device_blocked" // an administrator blocked this device of the user
	GateDeviceType      = "device_type"    // the configuration refuses the device's type
	ReasonDeviceBlocked = GateDeviceBlocked
	ReasonDeviceType    = GateDeviceType
)

// Bounds of what a request may say about its device.
const (
	maxDeviceID   = 128
	maxDeviceType = 64
	maxUserAgent  = 256
	maxDeviceCmd  = 32
)

// devicePersistEvery: a request that changes nothing of a device but its
// last-seen time and command is written to the store at most this often per
// user (a Ping every few minutes must not rewrite the file each time).
const devicePersistEvery = time.Minute

// ErrBadDevice is returned for a device id that is empty, too long or has
// characters no device id has (or, for a resync hook, characters a command
// line must not get).
var ErrBadDevice = errors.New("not a device id")

// Device is what one request says about its device.
type Device struct {
	ID        string // EAS DeviceId
	Type      string // EAS DeviceType
	UserAgent string
	Command   string // EAS Cmd
}

// DeviceKey is the key a device id is matched by (lowercased), or "" when
// id cannot be one: empty, over 128 bytes, not UTF-8, or with white space
// or control characters.
func DeviceKey(id string) string {
	id = strings.TrimSpace(id)
	if id == "" || len(id) > maxDeviceID || !utf8.ValidString(id) ||
		strings.ContainsFunc(id, func(c rune) bool { return unicode.IsSpace(c) || !unicode.IsPrint(c) }) {
		return ""
	}
	return strings.ToLower(id)
}

// hookDeviceRE is what a device id must look like to go into a resync hook:
// the characters of real device ids (letters, digits, and - _ . = +), never
// starting with '-'.
var hookDeviceRE = regexp.MustCompile(`^[A-Za-z0-9._=+][A-Za-z0-9._=+-]*$`)

// ValidHookDevice reports whether id may be substituted into a hook.
func ValidHookDevice(id string) bool {
	return len(id) <= maxDeviceID && hookDeviceRE.MatchString(id)
}

// clipText cuts s to at most n bytes on a rune boundary and drops control
// characters: what a client sends is shown to administrators.
func clipText(s string, n int) string {
	s = strings.Map(func(c rune) rune {
		if c == utf8.RuneError || unicode.IsControl(c) {
			return -1
		}
		return c
	}, strings.TrimSpace(s))
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

func cleanDevice(d Device) Device {
	return Device{ID: strings.TrimSpace(d.ID), Type: clipText(d.Type, maxDeviceType),
		UserAgent: clipText(d.UserAgent, maxUserAgent), Command: clipText(d.Command, maxDeviceCmd)}
}

// DeviceTypes is the configured device type policy, matched without regard
// to case. Allow, when not empty, lists the only types let in (a request
// without a type is then refused); Block lists types refused whatever
// Allow says.
type DeviceTypes struct {
	Allow []string
	Block []string
}

type deviceTypes struct {
	allow, block map[string]bool // lowercased
}

func compileDeviceTypes(t DeviceTypes) *deviceTypes {
	c := &deviceTypes{allow: map[string]bool{}, block: map[string]bool{}}
	for _, s := range t.Allow {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			c.allow[s] = true
		}
	}
	for _, s := range t.Block {
		if s = strings.ToLower(strings.TrimSpace(s)); s != "" {
			c.block[s] = true
		}
	}
	return c
}

// refuses reports whether the policy refuses a device of type typ.
func (t *deviceTypes) refuses(typ string) bool {
	k := strings.ToLower(strings.TrimSpace(typ))
	return (k != "" && t.block[k]) || (len(t.allow) > 0 && !t.allow[k])
}

// SetDeviceTypes replaces the device type policy (at start and on a
// reload). Requests in flight keep the verdict they got.
func (r *Registry) SetDeviceTypes(t DeviceTypes) {
	r.devTypes.Store(compileDeviceTypes(t))
}

// DeviceTypeRefused reports whether the device type policy refuses typ.
func (r *Registry) DeviceTypeRefused(typ string) bool { return r.devTypes.Load().refuses(typ) }

// DeviceBlock is an administrator's block of one device of a user.
type DeviceBlock struct {
	ID      string // the device id as given
	Reason  string
	By      string // the token's name
	Created time.Time
}

// CheckDevice is the device gate of one ActiveSync request, asked before
// it is forwarded: it refuses a device an administrator blocked for user
// (GateDeviceBlocked) and a type the configuration refuses
// (GateDeviceType), and returns "" otherwise. A refusal goes into the
// user's login history with its reason. The device is remembered for the
// connection: once the request is authenticated it is the user's device
// seen, it counts as the device's live connection, and a drop of the
// device reaches it.
func (c *Conn) CheckDevice(user string, d Device) string {
	u := NormalizeUser(user)
	d = cleanDevice(d)
	key := DeviceKey(d.ID)
	c.mu.Lock()
	c.device, c.deviceKey = d, key
	c.mu.Unlock()
	why := ""
	switch {
	case u != "" && key != "" && c.reg.policy.Load().deviceBlocked(u, key):
		why = GateDeviceBlocked
	case c.reg.devTypes.Load().refuses(d.Type):
		why = GateDeviceType
	default:
		return ""
	}
	c.reg.CountRefusal(why)
	c.history(u, "", LoginGated, why)
	if u != "" && key != "" {
		// A blocked device's user is read back from the store if need be;
		// a refused type is noted only for a user in memory (anyone may
		// name any user and any type).
		c.reg.devices.refused(u, key, c.reg.opts.Now(), why == GateDeviceBlocked)
	}
	return why
}

// DeviceInfo is one device of a user as the admin API shows it.
type DeviceInfo struct {
	ID          string
	Type        string
	UserAgent   string
	LastCommand string
	FirstSeen   time.Time // zero: never seen (blocked before it came)
	LastSeen    time.Time
	LastIP      netip.Addr
	LastRefused time.Time // the last request mailgate refused
	Live        int       // requests in flight now (a waiting Ping is one)
	Blocked     *DeviceBlock
	TypeRefused bool // the device type policy refuses its type
}

// Devices returns the user's devices, seen or blocked, the one seen last
// first; blocked devices never seen come last.
func (r *Registry) Devices(user string) []DeviceInfo {
	u := NormalizeUser(user)
	live := map[string]int{}
	r.each(func(c *Conn) {
		c.mu.Lock()
		if c.protocol == protocols.ProtoEAS && c.state == StateAuthenticated && c.user == u && c.deviceKey != "" {
			live[c.deviceKey]++
		}
		c.mu.Unlock()
	})
	blocks := r.policy.Load().deviceBlocks[u]
	types := r.devTypes.Load()
	var out []DeviceInfo
	seen := map[string]bool{}
	for key, d := range r.devices.list(u) {
		seen[key] = true
		info := DeviceInfo{ID: d.id, Type: d.typ, UserAgent: d.ua, LastCommand: d.cmd, FirstSeen: nsTime(d.first),
			LastSeen: nsTime(d.last), LastIP: d.ip, LastRefused: nsTime(d.refused), Live: live[key], TypeRefused: types.refuses(d.typ)}
		if b, ok := blocks[key]; ok {
			info.Blocked = &b
		}
		out = append(out, info)
	}
	for key, b := range blocks {
		if !seen[key] {
			out = append(out, DeviceInfo{ID: b.ID, Live: live[key], Blocked: &b})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].LastSeen.Equal(out[j].LastSeen) {
			return out[i].LastSeen.After(out[j].LastSeen)
		}
		return strings.ToLower(out[i].ID) < strings.ToLower(out[j].ID)
	})
	return out
}

func nsTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// BlockDevice blocks one device of a user, seen or not (replacing the
// reason of a block already there), and drops its live requests; it
// returns how many were dropped. With a store the block is committed
// before it applies; a store error changes nothing.
func (r *Registry) BlockDevice(user, id, reason, by string) (int, error) {
	u, key := NormalizeUser(user), DeviceKey(id)
	if u == "" || key == "" {
		return 0, ErrBadDevice
	}
	b := DeviceBlock{ID: strings.TrimSpace(id), Reason: reason, By: by, Created: r.opts.Now()}
	if d, ok := r.devices.list(u)[key]; ok {
		b.ID = d.id // as the device writes it
	}
	return r.change(Change{Kind: ChangeDeviceBlock, User: u, Device: &b}, func(st *Store) error { return st.putDeviceBlock(u, key, b) })
}

// AllowDevice lifts the block of a device; it reports whether there was one.
func (r *Registry) AllowDevice(user, id string) (bool, error) {
	u, key := NormalizeUser(user), DeviceKey(id)
	if u == "" || key == "" {
		return false, ErrBadDevice
	}
	found := false
	err := r.updatePolicy(func(p *policy) error {
		if _, found = p.deviceBlocks[u][key]; !found {
			return nil
		}
		if st := r.opts.Store; st != nil {
			if err := st.deleteDeviceBlock(u, key); err != nil {
				return err
			}
		}
		delete(p.deviceBlocks[u], key)
		if len(p.deviceBlocks[u]) == 0 {
			delete(p.deviceBlocks, u)
		}
		return nil
	})
	return found, err
}

// DeviceBlocked reports whether an administrator blocked the device.
func (r *Registry) DeviceBlocked(user, id string) bool {
	key := DeviceKey(id)
	return key != "" && r.policy.Load().deviceBlocked(NormalizeUser(user), key)
}

// DropDevice drops the live requests of one device of a user (a waiting
// Ping, a Sync) and returns how many it dropped. Requests not yet
// authenticated count when they try the user.
func (r *Registry) DropDevice(user, id, reason string) int {
	u, key := NormalizeUser(user), DeviceKey(id)
	if u == "" || key == "" {
		return 0
	}
	var victims []*Conn
	r.each(func(c *Conn) {
		c.mu.Lock()
		if c.protocol == protocols.ProtoEAS && c.deviceKey == key && (c.user == u || (c.user == "" && c.tried == u)) {
			victims = append(victims, c)
		}
		c.mu.Unlock()
	})
	n := 0
	for _, c := range victims {
		if c.Drop(reason) {
			n++
		}
	}
	return n
}

// ResyncDevice drops the live requests of one device, so that it comes
// back and synchronises again, and runs the eas resync hook, if one is
// configured, with {device} replaced by the device id. Each step is
// reported.
func (r *Registry) ResyncDevice(ctx context.Context, user, id string) ([]ResyncStep, error) {
	u := NormalizeUser(user)
	id = strings.TrimSpace(id)
	if !ValidHookUser(u) {
		return nil, ErrBadUser
	}
	if !ValidHookDevice(id) {
		return nil, ErrBadDevice
	}
	n := r.DropDevice(u, id, "resync")
	steps := []ResyncStep{{Step: "drop", OK: true, Detail: fmt.Sprintf("dropped %d request(s) of device %s", n, id), Count: n}}
	hook, ok := r.limits.Load().ResyncHooks[protocols.ProtoEAS]
	if !ok {
		return append(steps, ResyncStep{Step: "hook", OK: true, Detail: "no hook configured for eas"}), nil
	}
	detail, err := runHook(ctx, hook, u, protocols.ProtoEAS, id)
	return append(steps, ResyncStep{Step: "hook", OK: err == nil, Detail: detail}), nil
}

// The book of devices seen, in shards of users, each an LRU.

type deviceRec struct {
	id, typ, ua, cmd     string
	first, last, refused int64 // Unix ns
	ip                   netip.Addr
}

// deviceSet is one user's devices, by key.
type deviceSet struct {
	mu       sync.Mutex
	devs     map[string]*deviceRec
	enqueued int64 // when it was last queued for the store (Unix ns)
}

func (s *deviceSet) snapshot() map[string]deviceRec {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]deviceRec, len(s.devs))
	for k, d := range s.devs {
		out[k] = *d
	}
	return out
}

// seen records an authenticated request of device d; it reports whether
// the store should be told.
func (s *deviceSet) seen(key string, d Device, ip netip.Addr, ns int64, max int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.devs[key]
	changed := rec == nil
	if rec == nil {
		for len(s.devs) >= max {
			oldest := ""
			for k, x := range s.devs {
				if oldest == "" || x.last < s.devs[oldest].last {
					oldest = k
				}
			}
			delete(s.devs, oldest)
		}
		rec = &deviceRec{first: ns}
		s.devs[key] = rec
	} else {
		changed = rec.ip != ip || rec.typ != d.Type || rec.ua != d.UserAgent
	}
	rec.id, rec.typ, rec.ua, rec.ip, rec.last = d.ID, d.Type, d.UserAgent, ip, ns
	if d.Command != "" {
		rec.cmd = d.Command
	}
	if changed || time.Duration(ns-s.enqueued) >= devicePersistEvery {
		s.enqueued = ns
		return true
	}
	return false
}

// refused notes a refused request of a device already in the set.
func (s *deviceSet) refused(key string, ns int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	rec := s.devs[key]
	if rec == nil {
		return false
	}
	first := rec.refused == 0
	rec.refused = ns
	if first || time.Duration(ns-s.enqueued) >= devicePersistEvery {
		s.enqueued = ns
		return true
	}
	return false
}

type deviceBook struct {
	perUser int
	store   *Store
	shards  [nShards]struct {
		mu  sync.Mutex
		lru *simplelru.LRU[string, *deviceSet]
	}
}

func newDeviceBook(perUser, users int, store *Store) *deviceBook {
	if perUser < 0 {
		return nil
	}
	if perUser == 0 {
		perUser = DefaultDevicesPerUser
	}
	if users <= 0 {
		users = DefaultDeviceUsers
	}
	b := &deviceBook{perUser: perUser, store: store}
	per := max(1, (users+nShards-1)/nShards)
	for i := range b.shards {
		b.shards[i].lru, _ = simplelru.NewLRU[string, *deviceSet](per, nil)
	}
	if store != nil {
		store.setDeviceBounds(perUser, users)
	}
	return b
}

// seen records an authenticated request of device d of user.
func (b *deviceBook) seen(user, key string, d Device, ip netip.Addr, now time.Time) {
	if b == nil || user == "" || key == "" || len(user) > maxHistoryUser {
		return
	}
	s := b.set(user)
	if s.seen(key, d, ip.Unmap(), now.UnixNano(), b.perUser) && b.store != nil {
		b.store.enqueueDevices(user, s)
	}
}

// refused notes a refused request of a device the user has; with load
// the user is brought into memory for it.
func (b *deviceBook) refused(user, key string, now time.Time, load bool) {
	if b == nil || len(user) > maxHistoryUser {
		return
	}
	var s *deviceSet
	if load {
		s = b.set(user)
	} else {
		sh := &b.shards[fnv32(user)%nShards]
		sh.mu.Lock()
		s, _ = sh.lru.Peek(user)
		sh.mu.Unlock()
		if s == nil {
			return
		}
	}
	if s.refused(key, now.UnixNano()) && b.store != nil {
		b.store.enqueueDevices(user, s)
	}
}

// set returns user's set, loaded from the store (its queued writes, else
// the file) when the user is not in memory.
func (b *deviceBook) set(user string) *deviceSet {
	sh := &b.shards[fnv32(user)%nShards]
	sh.mu.Lock()
	s, ok := sh.lru.Get(user)
	sh.mu.Unlock()
	if ok {
		return s
	}
	s = &deviceSet{devs: map[string]*deviceRec{}}
	if b.store != nil {
		if p := b.store.pendingDevices(user); p != nil {
			s = p
		} else {
			s.devs = b.store.loadDevices(user)
		}
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if cur, ok := sh.lru.Get(user); ok {
		return cur
	}
	sh.lru.Add(user, s)
	return s
}

// list returns user's devices by key without bringing the user into memory.
func (b *deviceBook) list(user string) map[string]deviceRec {
	if b == nil {
		return nil
	}
	sh := &b.shards[fnv32(user)%nShards]
	sh.mu.Lock()
	s, ok := sh.lru.Peek(user)
	sh.mu.Unlock()
	switch {
	case ok:
		return s.snapshot()
	case b.store != nil:
		if p := b.store.pendingDevices(user); p != nil {
			return p.snapshot()
		}
		out := map[string]deviceRec{}
		for k, d := range b.store.loadDevices(user) {
			out[k] = *d
		}
		return out
	}
	return nil
}
