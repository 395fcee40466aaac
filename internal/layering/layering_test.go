package layering

import (
	"go/build"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/edgeseal/edgeseal"

// The layers, from the bottom; a package may import only packages of a lower
// rank. docs/architecture.md draws the same picture and says what each owns.
const (
	leaf       = iota // imports nothing of edgeseal's
	leafConfig        // the config: leaves only
	mechanism         // one job on leaves: a device, a file format, a protocol
	mechanism2        // a mechanism built on another
	feature           // what edgeseal does, on mechanisms
	feature2          // a feature that uses another feature's device side
	command           // mains: flags and one call
)

var layerNames = []string{"leaf", "leaf (config)", "mechanism", "mechanism (on mechanisms)", "feature", "feature (on features)", "command"}

var rank = map[string]int{
	"internal/naming":     leaf,
	"internal/paths":      leaf,
	"internal/fsutil":     leaf,
	"internal/strictjson": leaf,
	"internal/journal":    leaf,
	"internal/aesgcm":     leaf,
	"internal/cmdline":    leaf,
	"internal/sdbus":      leaf,
	"internal/fscrypt":    leaf,
	"internal/snapctl":    leaf,
	"internal/layering":   leaf,

	"internal/config": leafConfig,

	"internal/tpm":         mechanism,
	"internal/exeid":       mechanism,
	"internal/peer":        mechanism,
	"internal/snapd":       mechanism,
	"internal/pki":         mechanism,
	"internal/vaultbin":    mechanism,
	"internal/ledger":      mechanism,
	"internal/recovery":    mechanism,
	"internal/pkcs11proto": mechanism,
	"internal/vaultlayout": mechanism,
	"internal/vaultclient": leaf,
	"internal/policysync":  mechanism,
	"tokenclient":          mechanism,

	"internal/ctlproto":  mechanism2,
	"internal/seal":      mechanism2,
	"internal/sdunit":    mechanism2,
	"internal/unitwatch": mechanism2,
	"internal/vaultconf": mechanism2,
	"internal/access":    mechanism2,

	"internal/secretstore": feature,
	"internal/tokend":      feature,
	"internal/controller":  feature,
	"internal/refctl":      feature,
	"internal/snapconf":    feature,
	"internal/pkistep":     feature,

	"internal/fsvault": feature2,

	"cmd/edgeseal":            command,
	"cmd/edgeseal-pki":        command,
	"cmd/edgeseal-exeid":      command,
	"cmd/edgeseal-unseal":     command,
	"cmd/edgeseal-pkcs11":     command,
	"cmd/edgeseal-tokend":     command,
	"cmd/edgeseal-controller": command,
	"cmd/edgeseal-snap-hook":  command,
	"tools/snapmeta":          command,
}

// packages returns each Go package directory of the module (relative to its
// root) with its imports of the module's packages, from every non-test file
// of every build (the release build, the test hooks, the integration tests,
// the cgo helper).
func packages(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("cannot find the module's root: %v", err)
	}
	ctx := build.Default
	ctx.BuildTags = []string{"integration", "edgeseal_testhooks"}
	// cmd/edgeseal-pkcs11 is built with cgo, whatever CGO_ENABLED says here.
	ctx.CgoEnabled = true
	out := map[string][]string{}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || name == "testdata" || name == "bin" || name == "build" || name == "dist") {
			return filepath.SkipDir
		}
		if path != root {
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // a module of its own (tests/edgex)
			}
		}
		pkg, err := ctx.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			t.Fatalf("cannot read the package in %s: %v", path, err)
		}
		rel, _ := filepath.Rel(root, path)
		var imports []string
		for _, imp := range pkg.Imports {
			if p, ok := strings.CutPrefix(imp, module+"/"); ok {
				imports = append(imports, p)
			}
		}
		out[filepath.ToSlash(rel)] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func isTestTooling(pkg string) bool { return strings.HasPrefix(pkg, "tests/") }

func TestEveryImportPointsDownTheLayers(t *testing.T) {
	pkgs := packages(t)
	if len(pkgs) < len(rank) {
		t.Fatalf("found %d packages, fewer than the %d placed: is the walk from the module root?", len(pkgs), len(rank))
	}
	for _, pkg := range slices.Sorted(maps.Keys(pkgs)) {
		if isTestTooling(pkg) {
			continue // test tooling may import anything
		}
		r, ok := rank[pkg]
		if !ok {
			t.Errorf("%s is in no layer: place it in the table of internal/layering (and docs/architecture.md)", pkg)
			continue
		}
		for _, imp := range pkgs[pkg] {
			if isTestTooling(imp) {
				t.Errorf("%s (%s) imports test tooling %s", pkg, layerNames[r], imp)
				continue
			}
			ri, ok := rank[imp]
			if !ok {
				continue // reported as unplaced above
			}
			if ri >= r {
				t.Errorf("%s (%s) imports %s (%s): an import must point to a lower layer", pkg, layerNames[r], imp, layerNames[ri])
			}
		}
	}
	for pkg := range rank {
		if _, ok := pkgs[pkg]; !ok {
			t.Errorf("%s is placed in the table but is no package: remove it", pkg)
		}
	}
}
