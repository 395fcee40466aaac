//go:build integration

package integration

import (
	"testing"

	"github.com/edgeseal/edgeseal/internal/config"
)

func TestZZProbe(t *testing.T) {
	d := newDevice(t, false, func(c *config.Config) {
		c.Tokend.IdleExit = 0
		c.Services = []config.Service{{Name: "collector", Units: []string{benchUnit("collector")}}}
	}, withServer(servers[0]))
	d.start()
	d.run("systemctl", "start", "edgeseal-tokend.service")
	pid := d.mainPID("edgeseal-tokend.service")
	t.Log(d.run("sh", "-c", "which strace; cat /proc/"+pid+"/cgroup"))
	d.run("sh", "-c", "timeout 5 strace -f -tt -T -o /tmp/st.txt -p "+pid+" & sleep 1; systemd-run --wait --pipe --quiet --collect --unit=tokenbench-collector.service -p DynamicUser=yes /usr/lib/edgeseal-tests/tokenbench -mode socket -n 20 -c 1; wait; true")
	t.Log(d.run("sh", "-c", "grep -n accept4 /tmp/st.txt | head -5; L=$(grep -n \"accept4.*= [0-9]\" /tmp/st.txt | sed -n 10p | cut -d: -f1); sed -n \"${L},$((L+400))p\" /tmp/st.txt"))
}
