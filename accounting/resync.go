package accounting

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// ResyncHook is what a resync runs against the backend for one protocol:
// either an argv template (no shell; "{user}", "{protocol}" and, for an
// ActiveSync device's resync, "{device}" are replaced inside each
// argument) or an HTTP webhook that receives a JSON POST.
type ResyncHook struct {
	Command []string      // e.g. doveadm force-resync -u {user} INBOX
	URL     string        // e.g. http://127.0.0.1:8080/resync
	Timeout time.Duration // default 30s
}

// ResyncStep is the outcome of one step of a resync.
type ResyncStep struct {
	Step   string // "drop", "reconcile", "hook"
	OK     bool
	Detail string
	Count  int // drop: the sessions dropped; reconcile: the counters corrected
}

// userValueRE is what a user value must look like before it goes into a
// hook: an address of safe characters, never starting with '-' (which a
// command would read as an option).
var userValueRE = regexp.MustCompile(`^[A-Za-z0-9._%+=-]+(@[A-Za-z0-9.-]+)?$`)

// ErrBadUser is returned when a user value is unsafe for a resync hook.
var ErrBadUser = errors.New("user name not allowed in a resync hook")

// ValidHookUser reports whether u may be substituted into a hook.
func ValidHookUser(u string) bool {
	return len(u) <= 320 && userValueRE.MatchString(u) && !strings.HasPrefix(u, "-")
}

// Resync drops the user's sessions of a protocol (so devices reconnect and
// resynchronise), reconciles the user's live counters against the registry
// and runs the protocol's hook, if configured. Each step is reported.
func (r *Registry) Resync(ctx context.Context, user, protocol string) ([]ResyncStep, error) {
	user = NormalizeUser(user)
	if !ValidHookUser(user) {
		return nil, ErrBadUser
	}
	var steps []ResyncStep
	n := r.DropUser(user, protocol, "resync")
	steps = append(steps, ResyncStep{Step: "drop", OK: true, Detail: fmt.Sprintf("dropped %d session(s)", n), Count: n})
	fixed := r.reconcile(user)
	steps = append(steps, ResyncStep{Step: "reconcile", OK: true, Detail: fmt.Sprintf("corrected %d counter(s)", fixed), Count: fixed})
	hook, ok := r.limits.Load().ResyncHooks[protocol]
	if !ok {
		steps = append(steps, ResyncStep{Step: "hook", OK: true, Detail: "no hook configured for " + protocol})
		return steps, nil
	}
	detail, err := runHook(ctx, hook, user, protocol, "")
	steps = append(steps, ResyncStep{Step: "hook", OK: err == nil, Detail: detail})
	return steps, nil
}

// reconcile recomputes the user's live per-(protocol, IP) counts from the
// live connections and returns how many entries were wrong.
func (r *Registry) reconcile(user string) int {
	truth := map[liveKey]int{}
	r.each(func(c *Conn) {
		c.mu.Lock()
		if c.counted && c.user == user {
			truth[liveKey{c.protocol, c.client.Addr()}]++
		}
		c.mu.Unlock()
	})
	us := r.userShard(user)
	us.mu.Lock()
	defer us.mu.Unlock()
	st := us.m[user]
	if st == nil {
		return len(truth)
	}
	fixed := 0
	for k, n := range st.live {
		if truth[k] != n {
			fixed++
		}
	}
	for k := range truth {
		if _, ok := st.live[k]; !ok {
			fixed++
		}
	}
	st.live = truth
	return fixed
}

// runHook runs h for user and protocol, and device for a device's resync
// ("" for a user's: "{device}" is then replaced by nothing and the webhook
// body has no device).
func runHook(ctx context.Context, h ResyncHook, user, protocol, device string) (string, error) {
	timeout := h.Timeout
	if timeout <= 0 {
		timeout = DefaultResyncTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if len(h.Command) > 0 {
		argv := make([]string, len(h.Command))
		for i, a := range h.Command {
			argv[i] = strings.NewReplacer("{user}", user, "{protocol}", protocol, "{device}", device).Replace(a)
		}
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		text := strings.TrimSpace(string(out))
		if len(text) > 2000 {
			text = text[:2000] + "..."
		}
		if err != nil {
			return fmt.Sprintf("%s: %v: %s", argv[0], err, text), err
		}
		return fmt.Sprintf("%s: exit 0: %s", argv[0], text), nil
	}
	msg := map[string]string{"user": user, "protocol": protocol, "action": "resync"}
	if device != "" {
		msg["device"] = device
	}
	body, _ := json.Marshal(msg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return err.Error(), err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "webhook: " + err.Error(), err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		err := fmt.Errorf("webhook: HTTP %d", resp.StatusCode)
		return err.Error(), err
	}
	return fmt.Sprintf("webhook: HTTP %d", resp.StatusCode), nil
}
