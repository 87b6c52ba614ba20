// Command mailgate is a front proxy for mail servers: it terminates TLS,
// attributes every stream to a user and a client IP, counts live connections
// and lets an administrator drop, resync and gate them.
//
// Usage:
//
//	mailgate serve -config FILE   run from a config file
//	mailgate demo                 run with embedded backends, no file needed
//	mailgate check -config FILE   validate a config file and exit
//	mailgate ctl COMMAND          who, kick, resync, enable, disable, ... via the admin API
//	mailgate version
package main

import (
	"fmt"
	"os"
	"runtime/debug"
)

// version is set at build time (-ldflags "-X main.version=...",
// scripts/package.sh does it); otherwise it is the module version go install
// recorded, or "dev" for a build from a work tree.
var version = ""

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = cmdServe(os.Args[2:])
	case "demo":
		err = cmdDemo(os.Args[2:])
	case "check":
		err = cmdCheck(os.Args[2:])
	case "ctl":
		err = cmdCtl(os.Args[2:])
	case "upgrade":
		err = cmdUpgrade(os.Args[2:])
	case "cluster":
		err = cmdCluster(os.Args[2:])
	case "version", "-version", "--version":
		fmt.Println("mailgate", versionString())
	case "help", "-h", "-help", "--help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "mailgate: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mailgate:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `mailgate: a front proxy for mail servers

Commands:
  serve -config FILE   run from a YAML config (see configs/mailgate.example.yaml)
  demo [flags]         run with embedded IMAP, POP3, SMTP, XMPP and HTTP backends and demo users; no config needed
  check -config FILE   validate a config and exit
  ctl COMMAND          talk to a running mailgate's admin API (who, kick, resync,
                       enable, disable, domain, ips, block, unblock, lockouts)
  cluster import -config FILE
                       copy a single node's state file into the cluster's Redis
  upgrade -config FILE start the running mailgate's binary again on its sockets
                       (as SIGUSR2): the new process serves, the old one drains
  version              print the version

Run "mailgate COMMAND -h" for a command's flags.
`)
}
