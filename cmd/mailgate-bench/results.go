package main

import (
	"encoding/json"
	"io"
	"sync"
	"time"
)

// Result is one measurement, printed as one JSON line. "report" groups the
// lines by (scenario, metric, variant, target) and takes the median over
// rounds.
type Result struct {
	Time     string  `json:"time"`
	Round    int     `json:"round"`
	Scenario string  `json:"scenario"` // throughput, login, idle
	Target   string  `json:"target"`   // direct, mailgate, haproxy, nginx...
	Variant  string  `json:"variant"`  // plain or tls (the client's link)
	Metric   string  `json:"metric"`
	Value    float64 `json:"value"`
	Unit     string  `json:"unit,omitempty"`
	// Better is "higher" or "lower": how report reads a ratio.
	Better string `json:"better,omitempty"`
	// Extra holds what a reader may want to check a figure against (sizes,
	// counts, raw before/after readings).
	Extra map[string]any `json:"extra,omitempty"`
	// Error is set when the measurement failed; Value is then meaningless.
	Error string `json:"error,omitempty"`
}

// emitter writes results as JSON lines, safe for concurrent use, and
// remembers whether any measurement failed.
type emitter struct {
	mu     sync.Mutex
	enc    *json.Encoder
	failed bool
	all    []Result // kept for callers that want them (tests, smoke checks)
}

func newEmitter(w io.Writer) *emitter { return &emitter{enc: json.NewEncoder(w)} }

func (e *emitter) emit(r Result) {
	if r.Time == "" {
		r.Time = time.Now().UTC().Format(time.RFC3339)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if r.Error != "" {
		e.failed = true
	}
	e.all = append(e.all, r)
	e.enc.Encode(r)
}

// measurements returns what a scenario's run against t in round needs to
// report: base, the Result its measurements start from, and fail, which
// emits a failed measurement of metric.
func measurements(out *emitter, scenario string, t Target, round int) (base Result, fail func(metric string, err error)) {
	base = Result{Round: round, Scenario: scenario, Target: t.Name, Variant: t.Variant()}
	fail = func(metric string, err error) {
		r := base
		r.Metric, r.Error = metric, err.Error()
		out.emit(r)
	}
	return base, fail
}

// results returns a copy of everything emitted so far.
func (e *emitter) results() []Result {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Result(nil), e.all...)
}

func (e *emitter) anyFailed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failed
}
