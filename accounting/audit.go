package accounting

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// The audit trail: every change an administrator makes through the admin
// API, who made it, from where, why and with what outcome. With a Store it
// lives in the state file (bucket audit) and survives restarts and crashes;
// without one it is kept in memory. Either way it is bounded, by a number
// of entries and by age; the oldest entries go first.

// Audit bounds by default.
const (
	DefaultAuditKeep = 10000
	DefaultAuditDays = 90
)

// AuditEntry is one change. Params never hold a secret: the admin API puts
// there only what it parsed (a protocol, a flag, an expiry).
type AuditEntry struct {
	ID      uint64            `json:"id"` // assigned by Record, increasing
	Time    time.Time         `json:"time"`
	Actor   string            `json:"actor"`  // the token's name
	Role    string            `json:"role"`   // the token's role then
	Source  string            `json:"source"` // the admin client's IP
	Action  string            `json:"action"` // drop_user, block, ...
	Target  string            `json:"target"` // a user, a domain, a network, an IP
	Params  map[string]string `json:"params,omitempty"`
	Reason  string            `json:"reason,omitempty"`
	OK      bool              `json:"ok"`
	Dropped int               `json:"dropped"`        // sessions the change dropped
	Outcome string            `json:"outcome"`        // what happened, or the error
	Node    string            `json:"node,omitempty"` // the cluster node that made the change
}

// AuditFilter selects entries; zero fields match everything. Actor and
// Target match whole values, case-insensitively.
type AuditFilter struct {
	Actor  string
	Target string
	Since  time.Time
	Limit  int // at most this many, newest first (0: DefaultAuditKeep)
}

func (f AuditFilter) match(e *AuditEntry) bool {
	return (f.Actor == "" || strings.EqualFold(f.Actor, e.Actor)) &&
		(f.Target == "" || strings.EqualFold(f.Target, e.Target)) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since))
}

// AuditLog is the audit trail. Its methods are safe for concurrent use.
type AuditLog struct {
	store *Store // nil: in memory
	now   func() time.Time

	mu     sync.Mutex
	keep   int           // 0: no bound on the count
	maxAge time.Duration // 0: no bound on the age
	mem    []AuditEntry  // without a store: oldest first
	nextID uint64
}

// NewAuditLog returns the audit trail kept in store (nil: in memory),
// bounded to keep entries and to entries younger than maxAge. keep or
// maxAge 0 takes the default (DefaultAuditKeep, DefaultAuditDays days); a
// negative one turns that bound off. now is the clock (nil: time.Now).
func NewAuditLog(store *Store, keep int, maxAge time.Duration, now func() time.Time) *AuditLog {
	if now == nil {
		now = time.Now
	}
	a := &AuditLog{store: store, now: now, nextID: 1}
	a.SetBounds(keep, maxAge)
	return a
}

// SetBounds changes the bounds (a reload); they apply at the next Record.
// The arguments mean what NewAuditLog's do.
func (a *AuditLog) SetBounds(keep int, maxAge time.Duration) {
	switch {
	case keep == 0:
		keep = DefaultAuditKeep
	case keep < 0:
		keep = 0
	}
	switch {
	case maxAge == 0:
		maxAge = DefaultAuditDays * 24 * time.Hour
	case maxAge < 0:
		maxAge = 0
	}
	a.mu.Lock()
	a.keep, a.maxAge = keep, maxAge
	a.mu.Unlock()
}

// Record appends entries (one admin request may make several: a bulk
// action), giving each its ID and, when unset, the time. With a store they
// are committed in one transaction before Record returns. It returns the
// entries as recorded.
func (a *AuditLog) Record(entries ...AuditEntry) ([]AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	out := make([]AuditEntry, len(entries))
	for i, e := range entries {
		if e.Time.IsZero() {
			e.Time = now
		}
		out[i] = e
	}
	var cutoff time.Time
	if a.maxAge > 0 {
		cutoff = now.Add(-a.maxAge)
	}
	if a.store != nil {
		return out, a.store.appendAudit(out, a.keep, cutoff)
	}
	for i := range out {
		out[i].ID = a.nextID
		a.nextID++
	}
	a.mem = append(a.mem, out...)
	cut := 0
	for cut < len(a.mem) && ((a.keep > 0 && len(a.mem)-cut > a.keep) || a.mem[cut].Time.Before(cutoff)) {
		cut++
	}
	if cut > 0 {
		a.mem = append(a.mem[:0:0], a.mem[cut:]...)
	}
	return out, nil
}

// Query returns the entries f selects, newest first.
func (a *AuditLog) Query(f AuditFilter) ([]AuditEntry, error) {
	if f.Limit <= 0 {
		f.Limit = DefaultAuditKeep
	}
	if a.store != nil {
		return a.store.queryAudit(f)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []AuditEntry
	for i := len(a.mem) - 1; i >= 0 && len(out) < f.Limit; i-- {
		if f.match(&a.mem[i]) {
			out = append(out, a.mem[i])
		}
	}
	return out, nil
}

// auditKey is an entry's key in the audit bucket: its ID, big-endian, so
// that the bucket's order is the order of recording.
func auditKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, id)
}

// appendAudit commits entries (setting their IDs from the bucket's
// sequence), then drops the oldest beyond keep (0: no bound) and those
// before cutoff (zero: none), in the same transaction.
func (s *Store) appendAudit(entries []AuditEntry, keep int, cutoff time.Time) error {
	return s.db().Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketAudit)
		var last uint64
		for i := range entries {
			id, err := b.NextSequence()
			if err != nil {
				return err
			}
			entries[i].ID, last = id, id
			if err := putJSON(b, auditKey(id), entries[i]); err != nil {
				return err
			}
		}
		// Entries only ever go from the front, so the IDs in the bucket
		// are contiguous: the count is last - first + 1.
		c := b.Cursor()
		for k, v := c.First(); k != nil; k, v = c.First() {
			id := binary.BigEndian.Uint64(k)
			old := keep > 0 && last-id+1 > uint64(keep)
			if !old && !cutoff.IsZero() {
				var e AuditEntry
				old = json.Unmarshal(v, &e) != nil || e.Time.Before(cutoff)
			}
			if !old {
				break
			}
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
}

// queryAudit walks the bucket from the newest entry back.
func (s *Store) queryAudit(f AuditFilter) ([]AuditEntry, error) {
	var out []AuditEntry
	err := s.db().View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketAudit).Cursor()
		for k, v := c.Last(); k != nil && len(out) < f.Limit; k, v = c.Prev() {
			var e AuditEntry
			if err := json.Unmarshal(v, &e); err != nil {
				return fmt.Errorf("audit %x: %w", k, err)
			}
			if f.match(&e) {
				out = append(out, e)
			}
		}
		return nil
	})
	return out, err
}
