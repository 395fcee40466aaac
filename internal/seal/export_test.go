package seal

import "github.com/edgeseal/edgeseal/internal/config"

// NewPKCS11WithHelper is NewPKCS11 running the helper at helper (a test's
// own build) rather than the installed one.
func NewPKCS11WithHelper(cfg config.PKCS11, helper string) Sealer { return newPKCS11(cfg, helper) }
