package cluster

import (
	"sync"
	"sync/atomic"
	"time"
)

// stats are the cluster's numbers for the metrics.
type stats struct {
	changes       atomic.Int64 // changes applied from the bus
	resyncs       atomic.Int64 // policy reloads after resubscribing
	lockouts      atomic.Int64 // lockouts this node's failures decided
	eventsDropped atomic.Int64 // login-path events lost (queue full, Redis down)

	mu          sync.Mutex
	lag         time.Duration // last bus message's age when read
	propagation []float64     // seconds, the last changes from other nodes
}

func (s *stats) observeLag(d time.Duration) {
	s.mu.Lock()
	s.lag = d
	s.mu.Unlock()
}

func (s *stats) observePropagation(d time.Duration) {
	s.mu.Lock()
	if len(s.propagation) >= 256 {
		s.propagation = s.propagation[1:]
	}
	s.propagation = append(s.propagation, d.Seconds())
	s.mu.Unlock()
}

// Stats is a snapshot for the metrics.
type Stats struct {
	RedisUp       bool
	NodesUp       int
	BusLag        time.Duration
	Propagation   []float64 // seconds, recent changes made on other nodes, oldest first
	Changes       int64
	Resyncs       int64
	Lockouts      int64
	EventsDropped int64
}

// Stats returns the cluster's numbers.
func (c *Cluster) Stats() Stats {
	st := Stats{RedisUp: c.up.Load(), Changes: c.stats.changes.Load(), Resyncs: c.stats.resyncs.Load(),
		Lockouts: c.stats.lockouts.Load(), EventsDropped: c.stats.eventsDropped.Load()}
	for _, n := range c.Nodes() {
		if n.State == "up" {
			st.NodesUp++
		}
	}
	c.stats.mu.Lock()
	st.BusLag = c.stats.lag
	st.Propagation = append([]float64(nil), c.stats.propagation...)
	c.stats.propagation = c.stats.propagation[:0]
	c.stats.mu.Unlock()
	return st
}
