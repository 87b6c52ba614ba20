package adminapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/mailgate/mailgate/accounting"
)

// Error codes of the JSON error shape.
const (
	CodeUnauthorized     = "unauthorized"        // 401: missing or wrong bearer token
	CodeForbidden        = "forbidden"           // 403: the token's role may not do this
	CodeBadRequest       = "bad_request"         // 400: malformed body, query, id, IP, user or domain
	CodeUnknownProtocol  = "unknown_protocol"    // 400: not a protocol key (or selector)
	CodeNotFound         = "not_found"           // 404: unknown route or connection
	CodeMethodNotAllowed = "method_not_allowed"  // 405: the Allow header lists the methods
	CodeTooLarge         = "payload_too_large"   // 413: body over MaxBodyBytes
	CodeNotReady         = "not_ready"           // 503: /readyz while Options.Ready fails
	CodeNotImplemented   = "not_implemented"     // 501: the registry has no policy store, or no reload
	CodeReloadRefused    = "reload_refused"      // 422: the configuration was refused; nothing changed
	CodeUpgradeFailed    = "upgrade_failed"      // 422: the new binary did not come up; this process serves on
	CodeInternal         = "internal"            // 500: a bug; it is logged
	CodeUnavailable      = "cluster_unavailable" // 503: the cluster's store (Redis) is unreachable; nothing changed
)

// MaxBodyBytes bounds every request body.
const MaxBodyBytes = 64 << 10

// Error is the body of every error response, inside ErrorResponse. As a Go
// error it carries the HTTP status too.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Status  int    `json:"-"`
}

func (e *Error) Error() string { return e.Code + ": " + e.Message }

// ErrorResponse is {"error":{"code":...,"message":...}}.
type ErrorResponse struct {
	Error Error `json:"error"`
}

func apiErr(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *Error {
	return apiErr(http.StatusBadRequest, CodeBadRequest, format, args...)
}

func notFound(format string, args ...any) *Error {
	return apiErr(http.StatusNotFound, CodeNotFound, format, args...)
}

// writeJSON writes v with status. It marshals first, so a marshalling bug
// still gets a well-formed 500.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(ErrorResponse{Error{Code: CodeInternal, Message: "cannot encode the response"}})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// writeError is the one place an error becomes a response. Errors that are
// not *Error are bugs: the caller logs them; the client sees a plain 500.
func writeError(w http.ResponseWriter, err error) {
	var e *Error
	switch {
	case errors.As(err, &e):
	case errors.Is(err, accounting.ErrUnavailable):
		e = apiErr(http.StatusServiceUnavailable, CodeUnavailable,
			"the cluster store is unreachable; nothing was changed, try again")
	default:
		e = apiErr(http.StatusInternalServerError, CodeInternal, "internal error")
	}
	status := e.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, ErrorResponse{*e})
}

// decodeBody decodes one JSON object into v: bounded, strict about unknown
// fields and trailing data.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	r.Body = http.MaxBytesReader(w, r.Body, MaxBodyBytes)
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return bodyError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return bodyError(err)
		}
		return badRequest("malformed JSON body: trailing data after the object")
	}
	return nil
}

func bodyError(err error) error {
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return apiErr(http.StatusRequestEntityTooLarge, CodeTooLarge, "request body over %d bytes", MaxBodyBytes)
	case errors.Is(err, io.EOF):
		return badRequest("malformed JSON body: empty, want a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badRequest("malformed JSON body: truncated")
	}
	return badRequest("malformed JSON body: %v", err)
}

// query parses the query string strictly: a malformed query, a parameter
// not in allowed or a repeated one is a 400. A typo must not turn
// "drop?protocol=imap" into "drop everything".
func query(r *http.Request, allowed ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("malformed query string")
	}
	for k, v := range q {
		if !slices.Contains(allowed, k) {
			return nil, badRequest("unknown query parameter %s", quote(k))
		}
		if len(v) > 1 {
			return nil, badRequest("query parameter %s given %d times", quote(k), len(v))
		}
	}
	return q, nil
}

// quote quotes client input for a message, clipped so a long input is not
// echoed back whole.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		i := max
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i] + "..."
	}
	return strconv.Quote(s)
}
