package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"syscall"

	"github.com/mailgate/mailgate/configs"
	"github.com/mailgate/mailgate/internal/demo"
	"github.com/mailgate/mailgate/internal/netx"
	"github.com/mailgate/mailgate/protocols"
)

// cmdDemo runs mailgate with embedded backends and demo users: no config
// file, no mail server needed.
func cmdDemo(args []string) error {
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	imapAddr := fs.String("imap", "127.0.0.1:1143", "IMAP listener (STARTTLS)")
	imapsAddr := fs.String("imaps", "127.0.0.1:1993", "IMAP listener (implicit TLS)")
	popAddr := fs.String("pop3", "127.0.0.1:1110", "POP3 listener (STLS)")
	popsAddr := fs.String("pop3s", "127.0.0.1:1995", "POP3 listener (implicit TLS)")
	mxAddr := fs.String("smtp", "127.0.0.1:1025", "SMTP listener, MX role (STARTTLS, no AUTH)")
	subAddr := fs.String("submission", "127.0.0.1:1587", "SMTP submission listener (STARTTLS, AUTH)")
	subsAddr := fs.String("submissions", "127.0.0.1:1465", "SMTP submissions listener (implicit TLS, AUTH)")
	xmppAddr := fs.String("xmpp", "127.0.0.1:15222", "XMPP c2s listener (STARTTLS)")
	xmppsAddr := fs.String("xmpps", "127.0.0.1:15223", "XMPP c2s listener (direct TLS, XEP-0368)")
	adminAddr := fs.String("admin", "127.0.0.1:1880", "admin API listener")
	token := fs.String("token", "demo-admin-token", "admin API bearer token")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	state := fs.String("state", "", "state file (default: a fresh one in a temporary directory)")
	traffic := fs.Bool("traffic", false, "run a few simulated clients per protocol so the page has live rows at once")
	httpsAddr := fs.String("https", "127.0.0.1:1443", "HTTPS listener for EAS, MAPI, EWS, WebDAV and webmail (TCP and UDP)")
	redisAddr := fs.String("redis", "", "join a cluster through the redis-server at HOST:PORT (several demos with one -redis act as one)")
	nodeName := fs.String("node", "demo", "this node's name (unique in a cluster)")
	fs.Parse(args)

	dir, err := os.MkdirTemp("", "mailgate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	certFile, keyFile, err := netx.WriteSelfSigned(dir, "localhost", "127.0.0.1", "::1", "mail.example.com")
	if err != nil {
		return err
	}
	imapBackend, err := demo.StartIMAP("127.0.0.1:0", demo.Users)
	if err != nil {
		return fmt.Errorf("demo IMAP backend: %w", err)
	}
	defer imapBackend.Close()
	popBackend, err := demo.StartPOP3("127.0.0.1:0", demo.Users)
	if err != nil {
		return fmt.Errorf("demo POP3 backend: %w", err)
	}
	defer popBackend.Close()
	smtpBackend, err := demo.StartSMTP("127.0.0.1:0", demo.Users)
	if err != nil {
		return fmt.Errorf("demo SMTP backend: %w", err)
	}
	defer smtpBackend.Close()
	smtpB := configs.Backend{Address: smtpBackend.Addr()}
	xmppBackend, err := demo.StartXMPP("127.0.0.1:0", "example.com", demo.Users)
	if err != nil {
		return fmt.Errorf("demo XMPP backend: %w", err)
	}
	defer xmppBackend.Close()

	if *state == "" {
		*state = filepath.Join(dir, "state.db")
	}
	yes := true
	backend := configs.Backend{Address: imapBackend.Addr()}
	cfg := &configs.Config{
		Node:         *nodeName,
		State:        *state,
		LogLevel:     *level,
		Admin:        configs.Admin{Listen: *adminAddr, Token: *token},
		Certificates: []configs.Certificate{{Cert: certFile, Key: keyFile}},
		Listeners: []configs.Listener{
			{Name: "imap", Protocol: protocols.ProtoIMAP, Listen: *imapAddr, TLS: protocols.TLSStartTLS, Backend: backend},
			{Name: "imaps", Protocol: protocols.ProtoIMAP, Listen: *imapsAddr, TLS: protocols.TLSImplicit, Backend: backend},
			{Name: "pop3", Protocol: protocols.ProtoPOP, Listen: *popAddr, TLS: protocols.TLSStartTLS, Backend: configs.Backend{Address: popBackend.Addr()}},
			{Name: "pop3s", Protocol: protocols.ProtoPOP, Listen: *popsAddr, TLS: protocols.TLSImplicit, Backend: configs.Backend{Address: popBackend.Addr()}},
			{Name: "smtp", Protocol: protocols.ProtoSMTP, Role: "mx", Listen: *mxAddr, TLS: protocols.TLSStartTLS, Backend: smtpB},
			{Name: "submission", Protocol: protocols.ProtoSMTP, Role: "submission", Listen: *subAddr, TLS: protocols.TLSStartTLS, Backend: smtpB},
			{Name: "submissions", Protocol: protocols.ProtoSMTP, Role: "submissions", Listen: *subsAddr, TLS: protocols.TLSImplicit, Backend: smtpB},
			{Name: "xmpp", Protocol: protocols.ProtoXMPP, Listen: *xmppAddr, TLS: protocols.TLSStartTLS, Backend: configs.Backend{Address: xmppBackend.Addr()}},
			{Name: "xmpps", Protocol: protocols.ProtoXMPP, Listen: *xmppsAddr, TLS: protocols.TLSImplicit, Backend: configs.Backend{Address: xmppBackend.Addr()}},
		},
	}
	for i := range cfg.Listeners {
		cfg.Listeners[i].ProxyProtocol.Require = &yes
	}
	if *redisAddr != "" {
		cfg.Cluster = &configs.Cluster{Redis: configs.ClusterRedis{Addresses: []string{*redisAddr}}}
	}
	stopHTTP, err := demoHTTP(cfg, *httpsAddr)
	if err != nil {
		return fmt.Errorf("demo HTTP backends: %w", err)
	}
	defer stopHTTP()
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		return err
	}
	trafficCtx, stopTraffic := context.WithCancel(context.Background())
	defer stopTraffic()
	return run(cfg, "", func(a *app) {
		if *traffic {
			a.onShutdown = append([]func(context.Context){func(context.Context) { stopTraffic() }}, a.onShutdown...)
			var ls []demo.Listener
			for _, b := range a.bound {
				ls = append(ls, demo.Listener{Name: b.name, Protocol: b.protocol, TLS: protocols.TLSMode(b.tls), Addr: b.addr})
			}
			// End the simulated sessions at the signal that starts the
			// drain: the drain would wait for them.
			ctx, stop := signal.NotifyContext(trafficCtx, syscall.SIGTERM, syscall.SIGINT)
			go func() {
				defer stop()
				demo.Traffic(ctx, a.log, ls)
			}()
		}
		fmt.Println("mailgate demo is running. Press Ctrl-C to stop.")
		fmt.Println()
		for _, b := range a.bound {
			if b.name == "admin" {
				fmt.Printf("  admin page http://%s/  and API (token %s)\n", b.addr, *token)
				continue
			}
			fmt.Printf("  %-5s %-9s %-21s -> embedded backend %s\n", b.protocol, b.tls, b.addr, b.backend)
		}
		fmt.Println()
		fmt.Println("  users:")
		var names []string
		for u := range demo.Users {
			names = append(names, u)
		}
		sort.Strings(names)
		for _, u := range names {
			fmt.Printf("    %s / %s\n", u, demo.Users[u])
		}
		fmt.Println()
		fmt.Printf("  try:  curl -vk --ssl-reqd imap://%s/ -u alice@example.com:alice-secret\n", *imapAddr)
		fmt.Printf("        curl -s -H 'Authorization: Bearer %s' http://%s/api/v1/connections/summary\n", *token, *adminAddr)
		fmt.Println()
	})
}
