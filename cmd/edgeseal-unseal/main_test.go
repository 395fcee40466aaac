package main

import (
	"errors"
	"fmt"
	"testing"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/seal"
	"github.com/edgeseal/edgeseal/internal/secretstore"
	"github.com/edgeseal/edgeseal/internal/vaultbin"
)

// The codes are a contract with RestartPreventExitStatus= in the unit.
func TestExitCodesNameWhatARestartCannotCure(t *testing.T) {
	wrap := func(err error) error { return fmt.Errorf("cannot unseal: %w", err) }
	cases := []struct {
		err  error
		code int
	}{
		{exitError{2, errors.New("bad config")}, 2},
		{wrap(fmt.Errorf("cannot read the TPM PIN (seal.tpm2.pin_file): %w", fsutil.ErrUnsafeSecret)), 2},
		{wrap(seal.ErrCorrupt), 10},
		{wrap(seal.ErrWrongDevice), 11},
		{wrap(seal.ErrWrongMethod), 11},
		{wrap(seal.ErrHook), 12},
		{wrap(secretstore.ErrStorageLost), 13},
		{wrap(secretstore.ErrForeignVault), 14},
		{wrap(seal.ErrPCRMismatch), 15},
		{wrap(seal.ErrWrongPIN), 16},
		{wrap(seal.ErrLockout), 17},
		{wrap(seal.ErrTPMAbsent), 18},
		{wrap(vaultbin.ErrUnsupported), 19},
		{wrap(seal.ErrTokenAbsent), 18},
		{wrap(seal.ErrKeyAbsent), 20},
		{wrap(seal.ErrPKCS11), 21},
		{wrap(seal.ErrRolledBack), 22},
		{wrap(seal.ErrNVFull), 2},
		{wrap(seal.ErrNVInUse), 2},
		{fmt.Errorf("%w: %w", seal.ErrWrongDevice, errors.New("SRK changed")), 11},
		{errors.New("Vault did not answer"), 1},
	}
	for _, tc := range cases {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("%v: exit %d, want %d", tc.err, got, tc.code)
		}
	}
}
