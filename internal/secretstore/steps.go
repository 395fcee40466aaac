package secretstore

import "context"

// Step names a point in the boot sequence where everything before it is durable.
// The crash test kills the bootstrap at each one (EDGESEAL_CRASH_AT, a test build's
// hook) and checks that the next boot still ends with Vault unsealed and its data
// intact.
type Step string

const (
	StepInitMarker          Step = "init-marker-written"
	StepInitialized         Step = "vault-initialized"
	StepKeySealed           Step = "key-sealed"
	StepInitDone            Step = "init-marker-removed"
	StepUnsealed            Step = "vault-unsealed"
	StepAdminToken          Step = "admin-token-ready"
	StepKVMounted           Step = "kv-mounted"
	StepPoliciesWritten     Step = "policies-written"
	StepRolesWritten        Step = "roles-written"
	StepOldTokensRevoked    Step = "old-tokens-revoked"
	StepIssuingTokenWritten Step = "issuing-token-written"
	StepSupervisorToken     Step = "supervisor-token-ready"
)

// BootSteps are the steps of every boot, in order.
var BootSteps = []Step{
	StepUnsealed, StepAdminToken, StepKVMounted, StepPoliciesWritten, StepRolesWritten,
	StepOldTokensRevoked, StepIssuingTokenWritten, StepSupervisorToken,
}

// FirstBootSteps are the steps of the first boot, in order.
var FirstBootSteps = append([]Step{StepInitMarker, StepInitialized, StepKeySealed, StepInitDone}, BootSteps...)

// step reports s to b.OnStep (the tests' crash and failure injection); an
// error it returns fails the boot's setup there.
func (b *Bootstrap) step(_ context.Context, s Step) error {
	if b.OnStep != nil {
		return b.OnStep(s)
	}
	return nil
}
