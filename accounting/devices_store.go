package accounting

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The device book and the device blocks in the state file. Bucket
// eas_devices holds, per user, the devices seen and the time of the newest
// sighting; bucket eas_device_users indexes the users by that time (8 bytes
// of Unix ns, big-endian, then the user), so that the users seen longest
// ago go first beyond the bound, as in the login history. Bucket
// device_blocks holds the administrators' blocks, key user NUL device key;
// no bound forgets them.

var (
	bucketDevices      = []byte("eas_devices")      // user -> devicesRec
	bucketDeviceUsers  = []byte("eas_device_users") // be64(last ns) user -> nothing
	bucketDeviceBlocks = []byte("device_blocks")    // user \x00 device key -> deviceBlockRec
)

type devicesRec struct {
	Last    int64       `json:"last"` // Unix ns of the newest sighting: the eas_device_users key
	Devices []deviceDoc `json:"devices"`
}

type deviceDoc struct {
	ID        string    `json:"id"`
	Type      string    `json:"type,omitempty"`
	UserAgent string    `json:"user_agent,omitempty"`
	Command   string    `json:"command,omitempty"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
	Refused   time.Time `json:"refused,omitzero"`
	IP        string    `json:"ip,omitempty"`
}

type deviceBlockRec struct {
	ID      string    `json:"id"`
	Reason  string    `json:"reason,omitempty"`
	By      string    `json:"by,omitempty"`
	Created time.Time `json:"created"`
}

func (s *Store) setDeviceBounds(perUser, users int) {
	s.deviceBounds.Store(&historyBounds{perUser, users})
}

// enqueueDevices queues user's set for the next commit.
func (s *Store) enqueueDevices(user string, set *deviceSet) {
	p := &s.pending[fnv32(user)%nShards]
	p.mu.Lock()
	p.devices[user] = set
	p.mu.Unlock()
}

// pendingDevices is user's set if it waits for a commit or is being
// committed.
func (s *Store) pendingDevices(user string) *deviceSet {
	p := &s.pending[fnv32(user)%nShards]
	p.mu.Lock()
	defer p.mu.Unlock()
	if set := p.devices[user]; set != nil {
		return set
	}
	s.committingMu.Lock()
	defer s.committingMu.Unlock()
	for _, m := range s.committingDevs {
		if set := m[user]; set != nil {
			return set
		}
	}
	return nil
}

// loadDevices reads user's devices from the file.
func (s *Store) loadDevices(user string) map[string]*deviceRec {
	var rec devicesRec
	s.db().View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketDevices).Get([]byte(user)); v != nil {
			json.Unmarshal(v, &rec)
		}
		return nil
	})
	out := make(map[string]*deviceRec, len(rec.Devices))
	for _, d := range rec.Devices {
		key := DeviceKey(d.ID)
		if key == "" {
			continue
		}
		ip, _ := netip.ParseAddr(d.IP)
		out[key] = &deviceRec{id: d.ID, typ: d.Type, ua: d.UserAgent, cmd: d.Command, first: d.First.UnixNano(),
			last: d.Last.UnixNano(), refused: zeroNS(d.Refused), ip: ip}
	}
	if b := s.deviceBounds.Load(); b != nil {
		for len(out) > b.perUser { // a file written with a larger bound
			oldest := ""
			for k, d := range out {
				if oldest == "" || d.last < out[oldest].last {
					oldest = k
				}
			}
			delete(out, oldest)
		}
	}
	return out
}

func zeroNS(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// commitDevices writes the queued sets (called by commit, in its
// transaction) and forgets the users seen longest ago beyond the bound.
func (s *Store) commitDevices(tx *bolt.Tx, sets []map[string]*deviceSet) {
	db, ub := tx.Bucket(bucketDevices), tx.Bucket(bucketDeviceUsers)
	for _, m := range sets {
		for user, set := range m {
			devs := set.snapshot()
			if len(devs) == 0 {
				continue
			}
			var old devicesRec
			if v := db.Get([]byte(user)); v != nil {
				json.Unmarshal(v, &old)
				ub.Delete(loginUserKey(old.Last, user))
			} else {
				s.deviceUsers++
			}
			rec := devicesRec{Devices: make([]deviceDoc, 0, len(devs))}
			for _, d := range devs {
				rec.Last = max(rec.Last, d.last, d.refused)
				doc := deviceDoc{ID: d.id, Type: d.typ, UserAgent: d.ua, Command: d.cmd,
					First: time.Unix(0, d.first).UTC(), Last: time.Unix(0, d.last).UTC()}
				if d.refused != 0 {
					doc.Refused = time.Unix(0, d.refused).UTC()
				}
				if d.ip.IsValid() {
					doc.IP = d.ip.String()
				}
				rec.Devices = append(rec.Devices, doc)
			}
			putJSON(db, []byte(user), rec)
			ub.Put(loginUserKey(rec.Last, user), nil)
		}
	}
	b := s.deviceBounds.Load()
	if b == nil {
		return
	}
	c := ub.Cursor()
	for k, _ := c.First(); k != nil && s.deviceUsers > b.users; k, _ = c.First() {
		k = append([]byte(nil), k...)
		ub.Delete(k)
		if len(k) > 8 {
			db.Delete(k[8:])
		}
		s.deviceUsers--
	}
}

func (s *Store) putDeviceBlock(user, key string, b DeviceBlock) error {
	return s.db().Update(func(tx *bolt.Tx) error {
		return putJSON(tx.Bucket(bucketDeviceBlocks), deviceBlockKey(user, key),
			deviceBlockRec{ID: b.ID, Reason: b.Reason, By: b.By, Created: b.Created.UTC()})
	})
}

func (s *Store) deleteDeviceBlock(user, key string) error {
	return s.db().Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketDeviceBlocks).Delete(deviceBlockKey(user, key)) })
}

func deviceBlockKey(user, key string) []byte { return []byte(user + "\x00" + key) }

// loadDeviceBlocks reads the blocks into p (called by load, in its
// transaction).
func loadDeviceBlocks(tx *bolt.Tx, p *policy) error {
	return tx.Bucket(bucketDeviceBlocks).ForEach(func(k, v []byte) error {
		user, key, ok := strings.Cut(string(k), "\x00")
		var rec deviceBlockRec
		if !ok || json.Unmarshal(v, &rec) != nil {
			return nil
		}
		m := p.deviceBlocks[user]
		if m == nil {
			m = map[string]DeviceBlock{}
			p.deviceBlocks[user] = m
		}
		m[key] = DeviceBlock{ID: rec.ID, Reason: rec.Reason, By: rec.By, Created: rec.Created}
		return nil
	})
}
