package main

import "context"

// demoTraffic runs simulated clients against the demo's listeners so a new
// user sees live rows at once. Placeholder until the web page work lands.
func demoTraffic(ctx context.Context, a *app) {}
