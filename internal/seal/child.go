package seal

import (
	"context"
	"os"
	"os/exec"
	"syscall"
)

// childCommand is one run of a program the sealers start for an operation
// (the key material hook, the PKCS#11 helper) with ctx as its deadline: it
// runs in / with env as its whole environment, leads its own process group so
// that the end of ctx kills (SIGKILL) whatever it started too, not only
// itself, and output pipes a stray descendant holds open delay Wait at most
// hookWaitDelay.
func childCommand(ctx context.Context, env []string, path string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = env
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = hookWaitDelay
	return cmd
}

// pkcs11HelperEnv is the PKCS#11 helper's whole environment: hookPath, then
// SOFTHSM2_CONF (SoftHSM2's module finds its tokens with it) and each
// variable names names (seal.pkcs11.environment) that is set here.
func pkcs11HelperEnv(names []string) []string {
	env := []string{hookPath}
	for _, name := range append([]string{"SOFTHSM2_CONF"}, names...) {
		if v, ok := os.LookupEnv(name); ok && name != "PATH" {
			env = append(env, name+"="+v)
		}
	}
	return env
}
