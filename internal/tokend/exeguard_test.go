package tokend

import "testing"

func TestCapLineReadsTheCapabilitySetOfAStatusFile(t *testing.T) {
	status := "Name:\tapp\nCapInh:\t0000000000000000\nCapPrm:\t0000000000200000\nCapEff:\t0000000000000000\n"
	got, err := capLine(status, "CapPrm:")
	if err != nil || got != 1<<21 {
		t.Errorf("capLine = %x, %v; want CAP_SYS_ADMIN's bit", got, err)
	}
	if _, err := capLine("Name:\tapp\n", "CapPrm:"); err == nil {
		t.Error("a status without CapPrm was read")
	}
	if _, err := capLine("CapPrm:\tzz\n", "CapPrm:"); err == nil {
		t.Error("a CapPrm that is not hex was read")
	}
}
