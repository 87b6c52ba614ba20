// Command mailgate-bench is mailgate's load tool. It plays every part a
// proxy benchmark needs except the proxy: a fast IMAP backend, the nginx mail
// auth_http endpoint, and the client side of three scenarios, each measured
// against one or more targets (the backend directly, mailgate, HAProxy,
// nginx) and printed as one JSON line per measurement. bench/run.sh starts
// the servers, interleaves the targets round by round and pipes the lines
// into "mailgate-bench report", which prints medians and ratios.
//
// Usage:
//
//	mailgate-bench backend  -listen ADDR [-tls-listen ADDR -cert F -key F]
//	mailgate-bench authhttp -listen ADDR -backend IP:PORT
//	mailgate-bench cert     -dir DIR
//	mailgate-bench run      -scenario throughput|login|idle -target NAME=ADDR[,tls] ... [flags]
//	mailgate-bench report   [-gobench FILE] RESULTS.jsonl ...
//
// The scenarios:
//
//   - throughput: one connection logs in, then "b DOWNLOAD n" and
//     "b UPLOAD n" move n bytes through the proxy's relay; MiB/s each way.
//   - login: connect, greeting, LOGIN, tagged OK, LOGOUT, close.
//     Latency percentiles at concurrency 1, and the rate at concurrency 8
//     over a fixed duration.
//   - idle: log each user in and out once (mailgate keeps per-user state
//     after logout; it is reported apart), then hold N logged-in
//     connections, wait until the proxy settles, and report the proxy's
//     resident memory growth per connection (and, for mailgate, its
//     goroutine count from the admin API).
//
// Implementation notes:
//
//   - All traffic is loopback: every address is checked to be a loopback
//     address before anything is dialed or bound.
//   - The bulk paths do no per-byte work: the backend writes one shared
//     read-only 1 MiB buffer over and over and reads uploads into pooled
//     1 MiB buffers; the client does the same. Framing is still checked: the
//     tagged OK must follow exactly n bytes later.
//   - Held idle connections cost the client no goroutine: they sit in a
//     slice until the measurement is over.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "backend":
		err = cmdBackend(os.Args[2:])
	case "authhttp":
		err = cmdAuthHTTP(os.Args[2:])
	case "cert":
		err = cmdCert(os.Args[2:])
	case "run":
		err = cmdRun(os.Args[2:])
	case "report":
		err = cmdReport(os.Args[2:])
	case "help", "-h", "-help", "--help":
		usage()
		return
	default:
		fmt.Fprintf(os.Stderr, "mailgate-bench: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailgate-bench:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `mailgate-bench: load tool for mailgate (loopback only)

Commands:
  backend  -listen ADDR [-tls-listen ADDR -cert F -key F]
           a fast IMAP backend (password "bench"; DOWNLOAD/UPLOAD after login)
  authhttp -listen ADDR -backend IP:PORT
           the nginx mail auth_http endpoint, pointing nginx at the backend
  cert     -dir DIR
           write a self-signed ECDSA certificate (cert.pem, key.pem, combined.pem)
  run      -scenario throughput|login|idle -target NAME=ADDR[,tls] ... [flags]
           the client side; one JSON line per measurement on stdout
  report   [-gobench FILE] RESULTS.jsonl ...
           medians over rounds, ratios against mailgate, and the issue's targets

Run "mailgate-bench COMMAND -h" for a command's flags.
`)
}
