package main

import (
	"crypto/tls"

	"github.com/mailgate/mailgate/configs"
)

// startHTTP starts the HTTP mail protocols listener described by cfg.HTTP
// (non-nil) and registers its shutdown with a.onShutdown. Placeholder until
// the HTTP work lands.
func startHTTP(a *app, cfg *configs.Config, serverTLS *tls.Config) error { return nil }
