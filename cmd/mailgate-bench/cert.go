package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mailgate/mailgate/internal/netx"
)

// selfSignedPEM makes an ECDSA P-256 certificate for localhost and the
// loopback addresses. Every proxy in the bench serves this same certificate,
// so the TLS figures compare the proxies, not their keys (P-256 signs in tens
// of microseconds; RSA-2048 would make every handshake cost ~1 ms more).
func selfSignedPEM() (certPEM, keyPEM []byte, err error) {
	return netx.SelfSignedPEM("localhost", "mail.example.com", "127.0.0.1", "::1")
}

// cmdCert writes cert.pem, key.pem and combined.pem (HAProxy's crt format:
// certificate then key) into a directory, unless cert.pem and key.pem exist.
func cmdCert(args []string) error {
	fs := flag.NewFlagSet("cert", flag.ExitOnError)
	dir := fs.String("dir", "", "output directory (required)")
	force := fs.Bool("force", false, "overwrite an existing certificate")
	fs.Parse(args)
	if *dir == "" {
		return fmt.Errorf("cert: -dir is required")
	}
	certPath, keyPath := filepath.Join(*dir, "cert.pem"), filepath.Join(*dir, "key.pem")
	if !*force {
		if _, err1 := os.Stat(certPath); err1 == nil {
			if _, err2 := os.Stat(keyPath); err2 == nil {
				return nil
			}
		}
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return err
	}
	c, k, err := selfSignedPEM()
	if err != nil {
		return err
	}
	if err := os.WriteFile(certPath, c, 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, k, 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*dir, "combined.pem"), append(append([]byte{}, c...), k...), 0o600)
}
