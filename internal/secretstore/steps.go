package secretstore

import "context"

// Step names a point in the boot sequence where everything before it is durable.
// The crash test kills the bootstrap at each one (EDGESEAL_CRASH_AT) and checks that
// the next boot still ends with Vault unsealed and its data intact.
type Step string

const (
	StepInitMarker          Step = "init-marker-written"
	StepInitialized         Step = "vault-initialized"
	StepKeySealed           Step = "key-sealed"
	StepInitDone            Step = "init-marker-removed"
	StepUnsealed            Step = "vault-unsealed"
	StepRootToken           Step = "root-token-ready"
	StepKVMounted           Step = "kv-mounted"
	StepPoliciesWritten     Step = "policies-written"
	StepRolesWritten        Step = "roles-written"
	StepOldTokensRevoked    Step = "old-tokens-revoked"
	StepIssuingTokenWritten Step = "issuing-token-written"
	StepRootRevoked         Step = "root-token-revoked"
)

// BootSteps are the steps of every boot, in order.
var BootSteps = []Step{
	StepUnsealed, StepRootToken, StepKVMounted, StepPoliciesWritten, StepRolesWritten,
	StepOldTokensRevoked, StepIssuingTokenWritten, StepRootRevoked,
}

// FirstBootSteps are the steps of the first boot, in order.
var FirstBootSteps = append([]Step{StepInitMarker, StepInitialized, StepKeySealed, StepInitDone}, BootSteps...)

func (b *Bootstrap) step(_ context.Context, s Step) {
	if b.OnStep != nil {
		b.OnStep(s)
	}
}
