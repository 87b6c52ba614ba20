package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// What a proxy process costs, read from /proc (Linux): resident memory and
// CPU time, summed over a set of PIDs (nginx: its worker processes).

// parsePIDs reads "123" or "123+456".
func parsePIDs(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, "+") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("pid list %q: %q is not a PID", s, f)
		}
		out = append(out, n)
	}
	return out, nil
}

// memSample is the resident memory of a set of processes, in bytes.
type memSample struct {
	RSS  int64 // VmRSS: anonymous + file + shmem
	Anon int64 // RssAnon
}

// readMem sums VmRSS and RssAnon from /proc/PID/status over pids.
func readMem(pids []int) (memSample, error) {
	var m memSample
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			return m, fmt.Errorf("pid %d: %w", pid, err)
		}
		found := false
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), ":")
			if !ok {
				continue
			}
			switch k {
			case "VmRSS", "RssAnon":
				f := strings.Fields(v) // "1234 kB"
				if len(f) != 2 || f[1] != "kB" {
					return m, fmt.Errorf("pid %d: unexpected %s %q", pid, k, v)
				}
				n, err := strconv.ParseInt(f[0], 10, 64)
				if err != nil {
					return m, fmt.Errorf("pid %d: %s: %w", pid, k, err)
				}
				if k == "VmRSS" {
					m.RSS += n << 10
					found = true
				} else {
					m.Anon += n << 10
				}
			}
		}
		if !found {
			return m, fmt.Errorf("pid %d: no VmRSS (a zombie?)", pid)
		}
	}
	return m, nil
}

// clockTick is USER_HZ, the unit of utime/stime in /proc/PID/stat: 100 on
// every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// readCPU sums user+system CPU time over pids (all threads).
func readCPU(pids []int) (time.Duration, error) {
	var total time.Duration
	for _, pid := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, fmt.Errorf("pid %d: %w", pid, err)
		}
		// The command name (field 2) may hold spaces and parentheses: the
		// fields that follow start after the last ')'.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, fmt.Errorf("pid %d: unreadable stat", pid)
		}
		f := strings.Fields(string(b[i+1:]))
		// f[0] is field 3 (state); utime and stime are fields 14 and 15.
		if len(f) < 13 {
			return 0, fmt.Errorf("pid %d: short stat", pid)
		}
		ut, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, fmt.Errorf("pid %d: bad utime/stime", pid)
		}
		total += time.Duration(ut+st) * clockTick
	}
	return total, nil
}

// adminClient reads mailgate's admin API.
type adminClient struct {
	base  string // http://127.0.0.1:PORT
	token string
	hc    *http.Client
}

func newAdminClient(base, token string) (*adminClient, error) {
	u, err := url.Parse(base)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("admin URL %q: want http://IP:PORT", base)
	}
	if err := checkLoopback(u.Host); err != nil {
		return nil, fmt.Errorf("admin URL: %w", err)
	}
	return &adminClient{base: strings.TrimRight(base, "/"), token: token, hc: &http.Client{Timeout: 10 * time.Second}}, nil
}

// runtimeStats is the part of GET /api/v1/runtime the bench reads.
type runtimeStats struct {
	Goroutines  int            `json:"goroutines"`
	HeapInuse   int64          `json:"heap_inuse_bytes"`
	StacksInuse int64          `json:"stacks_inuse_bytes"`
	TotalMapped int64          `json:"total_mapped_bytes"`
	Live        map[string]int `json:"live_connections"`
}

func (a *adminClient) runtime(ctx context.Context) (runtimeStats, error) {
	var rs runtimeStats
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+"/api/v1/runtime", nil)
	if err != nil {
		return rs, err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.hc.Do(req)
	if err != nil {
		return rs, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return rs, fmt.Errorf("GET /api/v1/runtime: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&rs); err != nil {
		return rs, fmt.Errorf("GET /api/v1/runtime: %w", err)
	}
	if rs.Goroutines == 0 {
		return rs, errors.New("GET /api/v1/runtime: no goroutine count in the answer")
	}
	return rs, nil
}
