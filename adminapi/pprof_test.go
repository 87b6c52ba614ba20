package adminapi_test

import (
	"bytes"
	"compress/gzip"
	"io"
	"net/http"
	"strings"
	"testing"
)

// TestPprof: runtime profiles are served behind the token, as gzip'd
// protobuf; unknown names and absurd durations get the JSON error shape.
func TestPprof(t *testing.T) {
	e := newEnv(t)
	if r := e.raw("GET", "/api/v1/debug/pprof/heap", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("heap without token: %d", r.status)
	}
	r := e.do("GET", "/api/v1/debug/pprof/heap", "")
	if r.status != http.StatusOK {
		t.Fatalf("heap: %d %s", r.status, r.body)
	}
	zr, err := gzip.NewReader(bytes.NewReader(r.body))
	if err != nil {
		t.Fatalf("heap profile is not gzip: %v", err)
	}
	if b, err := io.ReadAll(zr); err != nil || len(b) == 0 {
		t.Fatalf("heap profile: %d bytes, %v", len(b), err)
	}
	if r := e.do("GET", "/api/v1/debug/pprof/goroutine?debug=1", ""); r.status != http.StatusOK || !strings.Contains(string(r.body), "goroutine profile:") {
		t.Fatalf("goroutine?debug=1: %d %.80s", r.status, r.body)
	}
	for path, want := range map[string]int{
		"/api/v1/debug/pprof/cmdline":             http.StatusNotFound,
		"/api/v1/debug/pprof/profile?seconds=0":   http.StatusBadRequest,
		"/api/v1/debug/pprof/profile?seconds=600": http.StatusBadRequest,
		"/api/v1/debug/pprof/profile?seconds=x":   http.StatusBadRequest,
	} {
		r := e.do("GET", path, "")
		if r.status != want || !strings.Contains(string(r.body), `"error"`) {
			t.Errorf("%s: %d %s, want %d with a JSON error", path, r.status, r.body, want)
		}
	}
	if r := e.do("GET", "/api/v1/debug/pprof/profile?seconds=1", ""); r.status != http.StatusOK || len(r.body) == 0 {
		t.Fatalf("cpu profile: %d, %d bytes", r.status, len(r.body))
	}
}
