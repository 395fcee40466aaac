package apparmorrules_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgeseal/edgeseal/tests/apparmorrules"
)

const sampleProfile = `# a comment
abi <abi/3.0>,
include <tunables/global>
@{STATE}=/var/lib/sample /srv/sample
@{STATE}+=/opt/sample

profile sample /usr/bin/sample flags=(attach_disconnected, complain) {
  include if exists <local/sample>
  /usr/bin/sample mr,            # its binary
  @{STATE}/** rw,
  deny @{STATE}/secret r,
  owner @{PROC}/@{pid}/status r,
  r /etc/sample.conf,
  "/with space/file" r,
  /usr/bin/helper Px -> helper,
  audit deny /etc/shadow rwklm,
  capability chown dac_override,
  deny capability chown,
  network inet stream,
  deny network inet6,
  unix (send) type=stream peer=(label=unconfined),
  signal (receive) peer=unconfined,
  dbus send bus=system path=/org/freedesktop/systemd1
       interface=org.freedesktop.systemd1.Manager member={GetUnitByPID,ListUnits}
       peer=(name=org.freedesktop.systemd1, label=unconfined),
  deny dbus send member=ListUnits,

  profile helper {
    /usr/bin/helper mr,
  }
}
`

func TestParseReadsEveryKindOfRule(t *testing.T) {
	pol, err := apparmorrules.Parse(sampleProfile)
	if err != nil {
		t.Fatal(err)
	}
	if pol.ABI != "<abi/3.0>" || len(pol.Includes) != 1 || pol.Includes[0].Path != "<tunables/global>" {
		t.Errorf("abi %q, includes %v", pol.ABI, pol.Includes)
	}
	if got := pol.Variables["STATE"]; !slices.Equal(got, []string{"/var/lib/sample", "/srv/sample", "/opt/sample"}) {
		t.Errorf("@{STATE} = %q", got)
	}
	p := pol.Profile("sample")
	if p == nil {
		t.Fatal("no profile sample")
	}
	if p.Attachment != "/usr/bin/sample" || !slices.Equal(p.Flags, []string{"attach_disconnected", "complain"}) {
		t.Errorf("attachment %q, flags %q", p.Attachment, p.Flags)
	}
	if len(p.Includes) != 1 || p.Includes[0] != (apparmorrules.Include{Path: "<local/sample>", IfExists: true}) {
		t.Errorf("profile includes %v", p.Includes)
	}
	if len(p.Children) != 1 || p.Children[0].Name != "helper" {
		t.Errorf("children %v", p.Children)
	}
	checks := []struct {
		path, perms string
		owner, want bool
	}{
		{"/usr/bin/sample", "mr", false, true},
		{"/usr/bin/sample", "w", false, false},
		{"/var/lib/sample/data/x", "rw", false, true},
		{"/srv/sample/x", "w", false, true},
		{"/opt/sample/x", "r", false, true},
		{"/var/lib/sample/secret", "r", false, false}, // deny wins
		{"/var/lib/sample/secret", "w", false, true},  // deny r only
		{"/proc/77/status", "r", true, true},
		{"/proc/77/status", "r", false, false}, // owner only
		{"/etc/sample.conf", "r", false, true},
		{"/with space/file", "r", false, true},
		{"/usr/bin/helper", "x", false, true},
		{"/etc/shadow", "r", true, false},
		{"/etc/passwd", "r", false, false},
	}
	for _, c := range checks {
		if got := p.Allows(c.path, c.perms, c.owner); got != c.want {
			t.Errorf("Allows(%q, %q, owner %v) = %v, want %v", c.path, c.perms, c.owner, got, c.want)
		}
	}
	if p.AllowsCapability("chown") || !p.AllowsCapability("dac_override") || p.AllowsCapability("sys_admin") {
		t.Errorf("capabilities %v", p.Capabilities())
	}
	if got := p.Capabilities(); !slices.Equal(got, []string{"dac_override"}) {
		t.Errorf("Capabilities() = %v", got)
	}
	if !p.AllowsNetwork("inet", "stream") || p.AllowsNetwork("inet", "dgram") || p.AllowsNetwork("inet6", "stream") {
		t.Error("network rules misread")
	}
	if len(p.Other) != 2 || p.Other[0].Kind != "unix" || p.Other[1].Kind != "signal" {
		t.Errorf("other rules %v", p.Other)
	}
	get := apparmorrules.DBusMessage{Access: "send", Bus: "system", Path: "/org/freedesktop/systemd1",
		Interface: "org.freedesktop.systemd1.Manager", Member: "GetUnitByPID",
		PeerName: "org.freedesktop.systemd1", PeerLabel: "unconfined"}
	if !p.AllowsDBus(get) {
		t.Errorf("%v denied", get)
	}
	list := get
	list.Member = "ListUnits"
	if p.AllowsDBus(list) {
		t.Errorf("%v allowed despite the deny rule", list)
	}
	recv := get
	recv.Access = "receive"
	if p.AllowsDBus(recv) {
		t.Errorf("%v allowed by a send rule", recv)
	}
}

func TestParseRefusesBrokenText(t *testing.T) {
	for name, text := range map[string]string{
		"no profile":          "abi <abi/3.0>,\n",
		"unclosed profile":    "profile a {\n /a r,\n",
		"missing comma":       "profile a {\n /a r\n}\n",
		"bad permission":      "profile a {\n /a rz,\n}\n",
		"w and a":             "profile a {\n /a wa,\n}\n",
		"exec without mode":   "profile a {\n /a x,\n}\n",
		"relative path":       "profile a {\n a/b r,\n}\n",
		"unknown rule":        "profile a {\n frobnicate,\n}\n",
		"rule outside":        "/a r,\n",
		"undefined variable":  "profile a {\n @{NOPE}/a r,\n}\n",
		"bad glob":            "profile a {\n /a{b r,\n}\n",
		"stray close":         "}\n",
		"unterminated quote":  "profile a {\n \"/a r,\n}\n",
		"bad dbus condition":  "profile a {\n dbus send colour=blue,\n}\n",
		"bad capability":      "profile a {\n capability CAP_CHOWN,\n}\n",
		"doubly defined var":  "@{A}=/a\n@{A}=/b\nprofile a {\n}\n",
		"network after proto": "profile a {\n network tcp inet,\n}\n",
	} {
		if _, err := apparmorrules.Parse(text); err == nil {
			t.Errorf("%s: Parse succeeded, want an error", name)
		}
	}
}

// FuzzParseProfile feeds arbitrary text to the profile reader and what it
// reads to the evaluators: neither may panic, and a glob that compiled must
// answer.
func FuzzParseProfile(f *testing.F) {
	f.Add(sampleProfile)
	files, _ := filepath.Glob(filepath.Join(profilesDir, "*.in"))
	if len(files) == 0 {
		f.Fatalf("no profile in %s to seed the corpus with", profilesDir)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(render(string(data)))
	}
	f.Add("profile a {\n /a{b,c{d,e}}/[^x]?*/** rw,\n}\n")
	f.Add("@{X}=@{X}\nprofile a {\n @{X} r,\n}\n")
	f.Add("profile a /b flags=(complain) {\n ^hat {\n  /c r,\n }\n}\n")
	f.Fuzz(func(t *testing.T, text string) {
		if len(text) > 1<<16 {
			return
		}
		pol, err := apparmorrules.Parse(text)
		if err != nil {
			return
		}
		for _, p := range pol.Profiles {
			for _, path := range []string{"/", "/etc/shadow", "/var/lib/edgeseal/unseal-key.sealed", "/proc/1/status", strings.Repeat("/a", 50)} {
				p.Allows(path, "rwaklmx", true)
				p.MayAccess(path, "r")
			}
			p.AllowsNetwork("inet", "stream")
			p.NetworkRulesFor("inet6")
			p.AllowsCapability("sys_admin")
			p.GrantsAllCapabilities()
			p.Capabilities()
			p.AllowsDBus(apparmorrules.DBusMessage{Access: "send", Bus: "system", Path: "/", Interface: "a.b", Member: "C", PeerName: "a.b", PeerLabel: "unconfined"})
			for _, r := range p.ExecRules() {
				_ = r.String()
			}
		}
	})
}
