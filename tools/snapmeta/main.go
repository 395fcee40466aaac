// Command snapmeta writes a snap's meta/snap.yaml from its snapcraft.yaml, as
// snapcraft does for what edgeseal uses: the snap's metadata, apps, hooks,
// plugs and slots are copied node by node (so a value such as socket-mode 0666
// stays as written), what only snapcraft reads (build-base, parts) is left out,
// and architectures is set. It checks that every app's and hook's executable is
// in the prime directory, so a snap that would not start is not packed.
//
// Usage: snapmeta -snapcraft snap/snapcraft.yaml -prime DIR [-arch amd64]
//
// It is how `make snap` packs on machines without snapcraft; production builds
// run snapcraft on the same snapcraft.yaml.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "snapmeta: %v\n", err)
		os.Exit(1)
	}
}

// copied are the top-level keys of snapcraft.yaml that snap.yaml holds as they are.
var copied = []string{"name", "version", "summary", "description", "base", "grade",
	"confinement", "license", "apps", "hooks", "plugs", "slots", "environment", "layout"}

// snapcraftOnly are the keys snapcraft reads and snap.yaml does not hold.
var snapcraftOnly = map[string]bool{"build-base": true, "parts": true, "adopt-info": true,
	"icon": true, "title": true, "platforms": true, "architectures": true}

func run(args []string) error {
	fs := flag.NewFlagSet("snapmeta", flag.ContinueOnError)
	src := fs.String("snapcraft", "snap/snapcraft.yaml", "the snapcraft.yaml to read")
	prime := fs.String("prime", "", "the snap's directory: meta/snap.yaml is written there")
	arch := fs.String("arch", runtime.GOARCH, "the snap's architecture")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *prime == "" {
		return errors.New("-prime DIR is required")
	}
	data, err := os.ReadFile(*src)
	if err != nil {
		return fmt.Errorf("cannot read %s: %w", *src, err)
	}
	out, err := snapYAML(data, *arch)
	if err != nil {
		return fmt.Errorf("%s: %w", *src, err)
	}
	if err := checkExecutables(out, *prime); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(*prime, "meta"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(*prime, "meta", "snap.yaml"), out, 0o644)
}

// snapYAML converts snapcraft.yaml to snap.yaml.
func snapYAML(snapcraft []byte, arch string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(snapcraft, &doc); err != nil {
		return nil, fmt.Errorf("cannot parse: %w", err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("not a YAML mapping")
	}
	top := doc.Content[0]
	known := map[string]bool{}
	for _, k := range copied {
		known[k] = true
	}
	values := map[string]*yaml.Node{}
	for i := 0; i+1 < len(top.Content); i += 2 {
		k := top.Content[i].Value
		if !known[k] && !snapcraftOnly[k] {
			return nil, fmt.Errorf("line %d: key %q is neither snap metadata nor a snapcraft build key this tool knows", top.Content[i].Line, k)
		}
		values[k] = top.Content[i+1]
	}
	for _, k := range []string{"name", "version", "summary", "base", "confinement"} {
		if values[k] == nil {
			return nil, fmt.Errorf("%s is missing", k)
		}
	}
	out := &yaml.Node{Kind: yaml.MappingNode}
	add := func(k string, v *yaml.Node) {
		out.Content = append(out.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: k}, v)
	}
	for _, k := range copied {
		if v := values[k]; v != nil {
			add(k, v)
		}
	}
	add("architectures", &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle,
		Content: []*yaml.Node{{Kind: yaml.ScalarNode, Value: arch}}})
	return yaml.Marshal(out)
}

// checkExecutables makes sure each app's command and each hook is in prime.
func checkExecutables(snapYAML []byte, prime string) error {
	var meta struct {
		Apps  map[string]struct{ Command string } `yaml:"apps"`
		Hooks map[string]any                      `yaml:"hooks"`
	}
	if err := yaml.Unmarshal(snapYAML, &meta); err != nil {
		return err
	}
	var missing []string
	for name, app := range meta.Apps {
		f := strings.Fields(app.Command)
		if len(f) == 0 {
			missing = append(missing, "app "+name+" has no command")
			continue
		}
		if !executable(filepath.Join(prime, f[0])) {
			missing = append(missing, fmt.Sprintf("app %s: %s", name, f[0]))
		}
	}
	for hook := range meta.Hooks {
		if !executable(filepath.Join(prime, "meta", "hooks", hook)) {
			missing = append(missing, "hook "+hook+": meta/hooks/"+hook)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("not executable in %s: %s", prime, strings.Join(missing, "; "))
	}
	return nil
}

func executable(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
