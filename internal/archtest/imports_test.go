package archtest

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const module = "github.com/mailgate/mailgate"

// rules: a package and the mailgate packages it may not import, directly.
// "x/..." is x and every package below it, "x/" only those below it.
var rules = []struct {
	pkg       string
	forbidden []string
}{
	{"protocols/...", []string{"proxy", "adminapi", "accounting", "configs", "cmd/...", "internal/demo"}},
	{"internal/netx", []string{"..."}},
	// protocols is the contract everyone shares (keys, deny codes, TLS
	// modes): accounting answers its Gate.
	{"accounting", []string{"proxy", "adminapi", "configs", "cmd/...", "internal/", "protocols/"}},
	// configs takes the libraries' defaults (they are defined there once),
	// and nothing reads configs but the commands.
	{"configs", []string{"adminapi", "cmd/...", "internal/demo"}},
	{"proxy", []string{"adminapi", "configs", "cmd/...", "internal/demo"}},
	{"adminapi", []string{"proxy", "configs", "cmd/...", "protocols/..."}},
	// cluster joins registries through Redis: it knows accounting only.
	{"cluster", []string{"proxy", "adminapi", "configs", "cmd/...", "internal/", "protocols/..."}},
}

func matches(pattern, pkg string) bool {
	if pattern == "..." {
		return true
	}
	if base, ok := strings.CutSuffix(pattern, "/..."); ok {
		return pkg == base || strings.HasPrefix(pkg, base+"/")
	}
	if strings.HasSuffix(pattern, "/") {
		return strings.HasPrefix(pkg, pattern)
	}
	return pkg == pattern
}

// TestImportsRunOneWay lists every package's imports with go list and fails
// for each import a rule forbids.
func TestImportsRunOneWay(t *testing.T) {
	gobin := filepath.Join(runtime.GOROOT(), "bin", "go")
	out, err := exec.Command(gobin, "list", "-f", `{{.ImportPath}}{{range .Imports}} {{.}}{{end}}`, module+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg, ok := strings.CutPrefix(f[0], module+"/")
		if !ok {
			continue
		}
		// Only the commands read the config; libraries get Options.
		if !matches("cmd/...", pkg) {
			for _, imp := range f[1:] {
				if imp == module+"/configs" {
					t.Errorf("%s imports configs: only cmd/... may; pass it Options instead", pkg)
				}
			}
		}
		for _, r := range rules {
			if !matches(r.pkg, pkg) {
				continue
			}
			checked++
			for _, imp := range f[1:] {
				dep, ok := strings.CutPrefix(imp, module+"/")
				if !ok {
					continue
				}
				for _, bad := range r.forbidden {
					if matches(bad, dep) {
						t.Errorf("%s imports %s: the arrow must point the other way (docs/architecture.md)", pkg, dep)
					}
				}
			}
		}
	}
	if checked < 8 {
		t.Fatalf("only %d packages matched a rule: is the module path %s still right?", checked, module)
	}
}
