package accounting

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store persists what must survive a restart or a crash
// (docs/architecture.md §6, "The state store"): per user per protocol the
// enabled flag, last login time and IP; per domain the enabled flag; the
// IP blocks; the authenticated-IP history per user, bounded; the admin
// audit trail (audit.go), bounded; the login history (logins.go) and the
// ActiveSync devices seen and blocked (devices_store.go).
//
// It is an embedded bbolt file: every write is a transaction, so a kill -9
// loses at most the writes not yet committed and never corrupts the file.
// Admin changes commit before the call returns. Login-path writes are queued
// and committed in batches by one goroutine, so a login never waits on fsync;
// a crash loses at most the last batch interval of last-login updates.
type Store struct {
	dbp     atomic.Pointer[bolt.DB] // db(); Release and Reopen swap it
	path    string
	maxHist int
	pending [nShards]pendingShard
	kick    chan chan struct{} // flush requests
	done    chan struct{}
	closed  atomic.Bool
	// The login history's bounds (logins.go), and how many users it holds
	// in the file (the writer's alone once open).
	loginBounds atomic.Pointer[historyBounds]
	loginUsers  int
	// committing holds the login histories of the commit running now: a
	// user read back from the store meanwhile must get them, not the file.
	committingMu sync.Mutex
	committing   []map[string]*loginRing
	// The same for the device book (devices_store.go).
	deviceBounds   atomic.Pointer[historyBounds]
	deviceUsers    int
	committingDevs []map[string]*deviceSet
}

// pendingShard holds login writes not yet committed, coalesced: per (user,
// protocol) only the latest login matters; per (user, ip, protocol) the
// history entry keeps the first and last time and the count.
type pendingShard struct {
	mu      sync.Mutex
	last    map[string]loginRec
	hists   map[string]*pendingHist
	logins  map[string]*loginRing // login histories to write whole (logins.go)
	devices map[string]*deviceSet // device books to write whole (devices_store.go)
}

type pendingHist struct {
	first, last time.Time
	n           int
}

var (
	bucketUserProto = []byte("user_protocols") // user \x00 protocol -> protoRec
	bucketDomains   = []byte("domains")        // domain -> domainRec
	bucketHistory   = []byte("ip_history")     // user \x00 ip \x00 protocol -> histRec
	bucketBlocks    = []byte("blocks")         // prefix -> blockRec
	bucketAudit     = []byte("audit")          // big-endian id -> AuditEntry (audit.go)
)

type blockRec struct {
	Reason  string    `json:"reason,omitempty"`
	Created time.Time `json:"created"`
	Expires time.Time `json:"expires,omitzero"`
}

type protoRec struct {
	Disabled  bool      `json:"disabled,omitempty"`
	LastLogin time.Time `json:"last_login,omitzero"`
	LastIP    string    `json:"last_ip,omitempty"`
}

type domainRec struct {
	Disabled bool `json:"disabled"`
}

type histRec struct {
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	Count     int       `json:"count"`
}

type loginRec struct {
	ip netip.Addr
	at time.Time
}

// storeCommitEvery is how often queued login writes are committed.
const storeCommitEvery = 50 * time.Millisecond

// OpenStore opens (or creates) the state file. maxHistory bounds each user's
// IP history (default 100).
func OpenStore(path string, maxHistory int) (*Store, error) {
	if maxHistory <= 0 {
		maxHistory = DefaultHistoryPerUser
	}
	return openStore(path, maxHistory, 2*time.Second)
}

// OpenStoreWait is OpenStore waiting up to wait for another process to
// release the file (the old process of an upgrade).
func OpenStoreWait(path string, maxHistory int, wait time.Duration) (*Store, error) {
	if maxHistory <= 0 {
		maxHistory = DefaultHistoryPerUser
	}
	return openStore(path, maxHistory, wait)
}

func openBolt(path string, wait time.Duration) (*bolt.DB, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: wait})
	if err != nil {
		return nil, fmt.Errorf("state file %s: %w", path, err)
	}
	return db, nil
}

func openStore(path string, maxHistory int, wait time.Duration) (*Store, error) {
	db, err := openBolt(path, wait)
	if err != nil {
		return nil, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketUserProto, bucketDomains, bucketHistory, bucketBlocks, bucketAudit, bucketLogins, bucketLoginUsers,
			bucketDevices, bucketDeviceUsers, bucketDeviceBlocks} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		db.Close()
		return nil, err
	}
	s := &Store{path: path, maxHist: maxHistory, kick: make(chan chan struct{}), done: make(chan struct{})}
	s.dbp.Store(db)
	db.View(func(tx *bolt.Tx) error {
		s.loginUsers = countLoginUsers(tx)
		s.deviceUsers = tx.Bucket(bucketDevices).Stats().KeyN
		return nil
	})
	for i := range s.pending {
		s.pending[i].last = map[string]loginRec{}
		s.pending[i].hists = map[string]*pendingHist{}
		s.pending[i].logins = map[string]*loginRing{}
		s.pending[i].devices = map[string]*deviceSet{}
	}
	go s.writer()
	return s, nil
}

func (s *Store) db() *bolt.DB { return s.dbp.Load() }

// Close commits queued writes and closes the file.
func (s *Store) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(s.kick)
	<-s.done
	return s.db().Close()
}

// Release hands the file to another process (the new one of an upgrade):
// queued writes are committed and the file is closed. Login writes queued
// afterwards stay in memory (PendingLogins; Reopen commits them); admin
// changes fail until Reopen.
func (s *Store) Release() error { return s.Close() }

// Reopen takes the file back after Release (an upgrade that failed) and
// commits what was queued meanwhile.
func (s *Store) Reopen(wait time.Duration) error {
	if !s.closed.Load() {
		return nil
	}
	db, err := openBolt(s.path, wait)
	if err != nil {
		return err
	}
	s.dbp.Store(db)
	s.kick, s.done = make(chan chan struct{}), make(chan struct{})
	s.closed.Store(false)
	go s.writer()
	return nil
}

// LoginRecord is one queued login write: the user's last login in a
// protocol and a count toward its (IP, protocol) history entry.
type LoginRecord struct {
	User, Protocol string
	IP             netip.Addr
	First, Last    time.Time
	Count          int
}

// PendingLogins takes the login writes queued and not committed (after
// Release: those the new process must write).
func (s *Store) PendingLogins() []LoginRecord {
	var out []LoginRecord
	for i := range s.pending {
		p := &s.pending[i]
		p.mu.Lock()
		for k, h := range p.hists {
			parts := strings.Split(k, "\x00")
			if len(parts) != 3 {
				continue
			}
			ip, err := netip.ParseAddr(parts[1])
			if err != nil {
				continue
			}
			out = append(out, LoginRecord{User: parts[0], Protocol: parts[2], IP: ip, First: h.first, Last: h.last, Count: h.n})
		}
		clear(p.hists)
		clear(p.last)
		p.mu.Unlock()
	}
	return out
}

// Flush waits until every login write queued before the call is committed.
func (s *Store) Flush() {
	if s.closed.Load() {
		return
	}
	ch := make(chan struct{})
	s.kick <- ch
	<-ch
}

// enqueueLogin records a login for the next commit; it never waits on disk.
func (s *Store) enqueueLogin(user, protocol string, ip netip.Addr, at time.Time) {
	p := &s.pending[fnv32(user)%nShards]
	hk := string(key(user, ip.String(), protocol))
	p.mu.Lock()
	p.last[string(key(user, protocol))] = loginRec{ip, at}
	if h := p.hists[hk]; h != nil {
		h.last, h.n = at, h.n+1
	} else {
		p.hists[hk] = &pendingHist{at, at, 1}
	}
	p.mu.Unlock()
}

func (s *Store) writer() {
	defer close(s.done)
	t := time.NewTicker(storeCommitEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.commit()
		case ch, ok := <-s.kick:
			s.commit()
			if !ok {
				return
			}
			close(ch)
		}
	}
}

// commit writes everything pending in one transaction.
func (s *Store) commit() {
	var lasts []map[string]loginRec
	var hists []map[string]*pendingHist
	var rings []map[string]*loginRing
	var devs []map[string]*deviceSet
	for i := range s.pending {
		p := &s.pending[i]
		p.mu.Lock()
		if len(p.last) > 0 {
			lasts, hists = append(lasts, p.last), append(hists, p.hists)
			p.last, p.hists = map[string]loginRec{}, map[string]*pendingHist{}
		}
		if len(p.logins) > 0 {
			rings = append(rings, p.logins)
			s.committingMu.Lock()
			s.committing = append(s.committing, p.logins)
			s.committingMu.Unlock()
			p.logins = map[string]*loginRing{}
		}
		if len(p.devices) > 0 {
			devs = append(devs, p.devices)
			s.committingMu.Lock()
			s.committingDevs = append(s.committingDevs, p.devices)
			s.committingMu.Unlock()
			p.devices = map[string]*deviceSet{}
		}
		p.mu.Unlock()
	}
	defer func() {
		s.committingMu.Lock()
		s.committing, s.committingDevs = nil, nil
		s.committingMu.Unlock()
	}()
	if len(lasts) == 0 && len(rings) == 0 && len(devs) == 0 {
		return
	}
	s.db().Update(func(tx *bolt.Tx) error {
		s.commitLogins(tx, rings)
		s.commitDevices(tx, devs)
		up, hb := tx.Bucket(bucketUserProto), tx.Bucket(bucketHistory)
		users := map[string]bool{}
		for _, m := range lasts {
			for k, r := range m {
				var pr protoRec
				if v := up.Get([]byte(k)); v != nil {
					json.Unmarshal(v, &pr)
				}
				pr.LastLogin, pr.LastIP = r.at, r.ip.String()
				putJSON(up, []byte(k), pr)
				users[k[:strings.IndexByte(k, 0)]] = true
			}
		}
		for _, m := range hists {
			for k, h := range m {
				var hr histRec
				if v := hb.Get([]byte(k)); v != nil {
					json.Unmarshal(v, &hr)
				} else {
					hr.FirstSeen = h.first
				}
				hr.LastSeen = h.last
				hr.Count += h.n
				putJSON(hb, []byte(k), hr)
			}
		}
		for u := range users {
			s.trimHistory(hb, u)
		}
		return nil
	})
}

// trimHistory keeps the user's most recent maxHist entries.
func (s *Store) trimHistory(hist *bolt.Bucket, user string) {
	prefix := []byte(user + "\x00")
	type ent struct {
		k    []byte
		last time.Time
	}
	var all []ent
	c := hist.Cursor()
	for k, v := c.Seek(prefix); k != nil && strings.HasPrefix(string(k), string(prefix)); k, v = c.Next() {
		var hr histRec
		json.Unmarshal(v, &hr)
		all = append(all, ent{append([]byte(nil), k...), hr.LastSeen})
	}
	for len(all) > s.maxHist {
		oldest := 0
		for i := range all {
			if all[i].last.Before(all[oldest].last) {
				oldest = i
			}
		}
		hist.Delete(all[oldest].k)
		all = append(all[:oldest], all[oldest+1:]...)
	}
}

// setProtocolDisabled commits a user's protocol flag.
func (s *Store) setProtocolDisabled(user, protocol string, disabled bool) error {
	return s.db().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUserProto)
		k := key(user, protocol)
		var pr protoRec
		if v := b.Get(k); v != nil {
			json.Unmarshal(v, &pr)
		}
		pr.Disabled = disabled
		return putJSON(b, k, pr)
	})
}

// setDomainDisabled commits a domain's flag.
func (s *Store) setDomainDisabled(domain string, disabled bool) error {
	return s.db().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketDomains)
		if !disabled {
			return b.Delete([]byte(domain))
		}
		return putJSON(b, []byte(domain), domainRec{Disabled: true})
	})
}

func (s *Store) putBlock(b Block) error {
	return s.db().Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketBlocks), []byte(b.Prefix.String()), blockRec{b.Reason, b.Created, b.Expires})
	})
}

func (s *Store) deleteBlock(p netip.Prefix) error {
	return s.db().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketBlocks).Delete([]byte(p.String())) })
}

// load reads everything into a policy and user states.
func (s *Store) load() (*policy, map[string]*userState, error) {
	p := &policy{disabledUser: map[string]map[string]bool{}, disabledDomain: map[string]bool{}, deviceBlocks: map[string]map[string]DeviceBlock{}}
	users := map[string]*userState{}
	get := func(u string) *userState {
		st := users[u]
		if st == nil {
			st = newUserState()
			users[u] = st
		}
		return st
	}
	err := s.db().View(func(tx *bolt.Tx) error {
		err := tx.Bucket(bucketUserProto).ForEach(func(k, v []byte) error {
			parts := strings.Split(string(k), "\x00")
			if len(parts) != 2 {
				return nil
			}
			var pr protoRec
			if err := json.Unmarshal(v, &pr); err != nil {
				return fmt.Errorf("user_protocols %q: %w", k, err)
			}
			u, proto := parts[0], parts[1]
			if pr.Disabled {
				if p.disabledUser[u] == nil {
					p.disabledUser[u] = map[string]bool{}
				}
				p.disabledUser[u][proto] = true
			}
			if !pr.LastLogin.IsZero() {
				st := get(u)
				st.lastLogin[proto] = pr.LastLogin
				st.lastIP[proto], _ = netip.ParseAddr(pr.LastIP)
				if pr.LastLogin.After(st.lastAny) {
					st.lastAny, st.lastAnyIP = pr.LastLogin, st.lastIP[proto]
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		err = tx.Bucket(bucketBlocks).ForEach(func(k, v []byte) error {
			pfx, err := netip.ParsePrefix(string(k))
			var br blockRec
			if err != nil || json.Unmarshal(v, &br) != nil {
				return nil
			}
			p.blocks = append(p.blocks, Block{Prefix: pfx, Reason: br.Reason, Created: br.Created, Expires: br.Expires})
			return nil
		})
		if err != nil {
			return err
		}
		if err := loadDeviceBlocks(tx, p); err != nil {
			return err
		}
		err = tx.Bucket(bucketDomains).ForEach(func(k, v []byte) error {
			var dr domainRec
			if json.Unmarshal(v, &dr) == nil && dr.Disabled {
				p.disabledDomain[string(k)] = true
			}
			return nil
		})
		if err != nil {
			return err
		}
		return tx.Bucket(bucketHistory).ForEach(func(k, v []byte) error {
			parts := strings.Split(string(k), "\x00")
			if len(parts) != 3 {
				return nil
			}
			ip, err := netip.ParseAddr(parts[1])
			if err != nil {
				return nil
			}
			var hr histRec
			if err := json.Unmarshal(v, &hr); err != nil {
				return fmt.Errorf("ip_history %q: %w", k, err)
			}
			get(parts[0]).history[histKey{ip, parts[2]}] = &IPRecord{IP: ip, Protocol: parts[2],
				FirstSeen: hr.FirstSeen, LastSeen: hr.LastSeen, Count: hr.Count}
			return nil
		})
	})
	return p, users, err
}

func key(parts ...string) []byte { return []byte(strings.Join(parts, "\x00")) }

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	buf, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, buf)
}

// ErrStore wraps a failed policy write: the change was not applied.
var ErrStore = errors.New("state store write failed")

// enqueueRecord queues a login record taken from another process.
func (s *Store) enqueueRecord(rec LoginRecord) {
	user := NormalizeUser(rec.User)
	p := &s.pending[fnv32(user)%nShards]
	hk := string(key(user, rec.IP.String(), rec.Protocol))
	p.mu.Lock()
	lk := string(key(user, rec.Protocol))
	if cur, ok := p.last[lk]; !ok || rec.Last.After(cur.at) {
		p.last[lk] = loginRec{rec.IP, rec.Last}
	}
	if h := p.hists[hk]; h != nil {
		if rec.Last.After(h.last) {
			h.last = rec.Last
		}
		if rec.First.Before(h.first) {
			h.first = rec.First
		}
		h.n += rec.Count
	} else {
		p.hists[hk] = &pendingHist{rec.First, rec.Last, rec.Count}
	}
	p.mu.Unlock()
}
