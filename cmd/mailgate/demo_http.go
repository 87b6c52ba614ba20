package main

import "github.com/mailgate/mailgate/configs"

// demoHTTP starts the embedded HTTP backends of the demo and sets cfg.HTTP
// to front them on addr. Placeholder until the HTTP work lands.
func demoHTTP(cfg *configs.Config, addr string) (cleanup func(), err error) { return func() {}, nil }
