package accounting_test

import (
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/accounting"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func entry(i int) accounting.AuditEntry {
	return accounting.AuditEntry{Actor: []string{"ops", "ada"}[i%2], Action: "drop_user",
		Target: fmt.Sprintf("user%d@example.com", i%3), OK: true, Dropped: i, Outcome: fmt.Sprintf("dropped %d session(s)", i)}
}

func ids(es []accounting.AuditEntry) []uint64 {
	out := make([]uint64, len(es))
	for i, e := range es {
		out[i] = e.ID
	}
	return out
}

// eachAuditLog runs fn against an in-memory trail and one in a state file.
func eachAuditLog(t *testing.T, keep int, days int, fn func(t *testing.T, a *accounting.AuditLog, clk *fakeClock, reopen func() *accounting.AuditLog)) {
	age := time.Duration(days) * 24 * time.Hour
	if days < 0 {
		age = -1
	}
	t.Run("memory", func(t *testing.T) {
		clk := &fakeClock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
		a := accounting.NewAuditLog(nil, keep, age, clk.Now)
		fn(t, a, clk, nil)
	})
	t.Run("store", func(t *testing.T) {
		clk := &fakeClock{t: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)}
		path := filepath.Join(t.TempDir(), "state.db")
		st, err := accounting.OpenStore(path, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		reopen := func() *accounting.AuditLog {
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}
			if st, err = accounting.OpenStore(path, 0); err != nil {
				t.Fatal(err)
			}
			return accounting.NewAuditLog(st, keep, age, clk.Now)
		}
		fn(t, accounting.NewAuditLog(st, keep, age, clk.Now), clk, reopen)
	})
}

func TestAuditLog_recordQueryAndBounds(t *testing.T) {
	eachAuditLog(t, 5, 2, func(t *testing.T, a *accounting.AuditLog, clk *fakeClock, reopen func() *accounting.AuditLog) {
		for i := 1; i <= 4; i++ {
			got, err := a.Record(entry(i))
			if err != nil {
				t.Fatal(err)
			}
			if got[0].ID != uint64(i) || !got[0].Time.Equal(clk.Now()) {
				t.Fatalf("Record #%d = id %d time %v", i, got[0].ID, got[0].Time)
			}
			clk.Add(time.Hour)
		}
		all, _ := a.Query(accounting.AuditFilter{})
		if fmt.Sprint(ids(all)) != "[4 3 2 1]" {
			t.Fatalf("Query() ids = %v, want newest first", ids(all))
		}
		byActor, _ := a.Query(accounting.AuditFilter{Actor: "OPS"})
		if fmt.Sprint(ids(byActor)) != "[4 2]" {
			t.Errorf("actor ops = %v", ids(byActor))
		}
		byTarget, _ := a.Query(accounting.AuditFilter{Target: "user1@example.com"})
		if fmt.Sprint(ids(byTarget)) != "[4 1]" {
			t.Errorf("target user1 = %v", ids(byTarget))
		}
		since, _ := a.Query(accounting.AuditFilter{Since: clk.Now().Add(-2 * time.Hour)})
		if fmt.Sprint(ids(since)) != "[4 3]" {
			t.Errorf("since 2h = %v", ids(since))
		}
		limited, _ := a.Query(accounting.AuditFilter{Limit: 2})
		if fmt.Sprint(ids(limited)) != "[4 3]" {
			t.Errorf("limit 2 = %v", ids(limited))
		}

		// Several entries at once (a bulk), past the count bound: the
		// oldest go.
		if _, err := a.Record(entry(5), entry(6), entry(7)); err != nil {
			t.Fatal(err)
		}
		all, _ = a.Query(accounting.AuditFilter{})
		if fmt.Sprint(ids(all)) != "[7 6 5 4 3]" {
			t.Fatalf("after 7 entries with keep 5: %v", ids(all))
		}
		// Past the age bound (2 days): everything older goes at the next Record.
		clk.Add(48 * time.Hour)
		if _, err := a.Record(entry(8)); err != nil {
			t.Fatal(err)
		}
		all, _ = a.Query(accounting.AuditFilter{})
		if fmt.Sprint(ids(all)) != "[8 7 6 5]" {
			t.Fatalf("after 2 days: %v", ids(all))
		}
		if reopen == nil {
			return
		}
		a = reopen()
		all, _ = a.Query(accounting.AuditFilter{})
		if fmt.Sprint(ids(all)) != "[8 7 6 5]" || all[0].Outcome != "dropped 8 session(s)" || all[0].Actor != "ops" {
			t.Fatalf("after a reopen: %v %+v", ids(all), all)
		}
		got, _ := a.Record(entry(9))
		if got[0].ID != 9 {
			t.Errorf("the first id after a reopen = %d, want 9 (ids never repeat)", got[0].ID)
		}
		a.SetBounds(2, -1)
		a.Record(entry(10))
		all, _ = a.Query(accounting.AuditFilter{})
		if fmt.Sprint(ids(all)) != "[10 9]" {
			t.Errorf("after SetBounds(2): %v", ids(all))
		}
	})
}

func TestAuditLog_unboundedCount(t *testing.T) {
	eachAuditLog(t, -1, 1, func(t *testing.T, a *accounting.AuditLog, clk *fakeClock, _ func() *accounting.AuditLog) {
		for i := 0; i < 30; i++ {
			a.Record(entry(i))
		}
		if all, _ := a.Query(accounting.AuditFilter{}); len(all) != 30 {
			t.Fatalf("keep -1: %d entries, want 30", len(all))
		}
		clk.Add(25 * time.Hour)
		a.Record(entry(1))
		if all, _ := a.Query(accounting.AuditFilter{}); len(all) != 1 {
			t.Fatalf("a day later: %d entries, want 1", len(all))
		}
	})
}
