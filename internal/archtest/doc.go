// Package archtest holds no code, only the test that keeps mailgate's
// imports running one way (docs/architecture.md): protocol packages never
// reach up into the proxy core, the admin API or the commands, and the leaf
// packages import nothing of mailgate's.
package archtest
