package adminapi

import (
	"net/http"
	"net/http/pprof"
	"strconv"

	"github.com/mailgate/mailgate/accounting"
)

// profiles are the runtime profiles served under /api/v1/debug/pprof/,
// behind the admin token like the rest of the API: the figures in
// BENCHMARKS.md came from them, and an operator can take the same ones from
// a live node: fetch with curl and the token, open with go tool pprof.
var profiles = map[string]bool{
	"allocs": true, "block": true, "goroutine": true, "heap": true, "mutex": true, "threadcreate": true,
}

func (s *Server) routePprof() {
	s.handle("GET /api/v1/debug/pprof/profile", accounting.RoleViewer, func(w http.ResponseWriter, r *http.Request) error {
		// A CPU profile longer than the listener's write timeout would be
		// cut off; refuse it up front.
		if v := r.URL.Query().Get("seconds"); v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 1 || n > 50 {
				return apiErr(http.StatusBadRequest, CodeBadRequest, "seconds must be 1 to 50")
			}
		}
		pprof.Profile(w, r)
		return nil
	})
	s.handle("GET /api/v1/debug/pprof/{name}", accounting.RoleViewer, func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		if !profiles[name] {
			return notFound("no such profile: %s", quote(name))
		}
		pprof.Handler(name).ServeHTTP(w, r)
		return nil
	})
}
