//go:build race

package e2e

// raceEnabled: the tests run with -race, so the mailgate binary under test is
// built with -race too and its data-race reports fail the test.
const raceEnabled = true
