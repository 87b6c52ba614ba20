package adminapi

import (
	"net/http"
	"runtime"
	"runtime/metrics"
)

// RuntimeStats is the body of GET /api/v1/runtime: what the process costs,
// for capacity planning and the benchmark harness.
type RuntimeStats struct {
	Goroutines  int    `json:"goroutines"`
	HeapInuse   uint64 `json:"heap_inuse_bytes"`
	HeapObjects uint64 `json:"heap_objects"`
	StacksInuse uint64 `json:"stacks_inuse_bytes"`
	TotalMapped uint64 `json:"total_mapped_bytes"`
	GCCycles    uint64 `json:"gc_cycles"`
	GOMAXPROCS  int    `json:"gomaxprocs"`
	LiveByProto any    `json:"live_connections"`
}

var runtimeSamples = []string{
	"/memory/classes/heap/objects:bytes",
	"/gc/heap/objects:objects",
	"/memory/classes/heap/stacks:bytes",
	"/memory/classes/total:bytes",
	"/gc/cycles/total:gc-cycles",
}

func (s *Server) runtimeStats(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	samples := make([]metrics.Sample, len(runtimeSamples))
	for i, n := range runtimeSamples {
		samples[i].Name = n
	}
	metrics.Read(samples)
	val := func(i int) uint64 {
		if samples[i].Value.Kind() == metrics.KindUint64 {
			return samples[i].Value.Uint64()
		}
		return 0
	}
	writeJSON(w, http.StatusOK, RuntimeStats{
		Goroutines: runtime.NumGoroutine(), HeapInuse: val(0), HeapObjects: val(1),
		StacksInuse: val(2), TotalMapped: val(3), GCCycles: val(4),
		GOMAXPROCS: runtime.GOMAXPROCS(0), LiveByProto: s.reg.Summary(),
	})
	return nil
}
