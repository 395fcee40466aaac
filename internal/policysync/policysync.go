// Package policysync is the protocol of the policy-sync socket
// (paths.PolicySync): the token provider, meeting a service the config gained
// after boot, asks edgeseal-unseal, which alone may write policies, to apply
// the config as it is now. One request line, one answer line of JSON, both
// bounded; the socket is the provider's user's only (0600), and
// edgeseal-unseal checks its peer's uid too. Its two sides live in package
// secretstore (the answer) and package tokend (the question); neither owns
// the other.
package policysync

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/edgeseal/edgeseal/internal/strictjson"
)

// Request is the one request.
const Request = "sync\n"

// maxRequest and maxReply bound what each side reads.
const (
	maxRequest = 64
	maxReply   = 4096
)

// ErrBadRequest: what came is not Request.
var ErrBadRequest = errors.New("not a policy-sync request")

// Reply is the answer: OK, or the error that kept the config from being
// applied (its first line, for the provider's journal).
type Reply struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
}

// ReadRequest reads the request, at most maxRequest bytes.
func ReadRequest(r io.Reader) error {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxRequest), maxRequest).ReadString('\n')
	if err != nil || line != Request {
		return ErrBadRequest
	}
	return nil
}

// WriteReply writes rep as one line.
func WriteReply(w io.Writer, rep Reply) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// ReadReply reads one answer line, at most maxReply bytes, strictly.
func ReadReply(r io.Reader) (Reply, error) {
	line, err := bufio.NewReaderSize(io.LimitReader(r, maxReply), maxReply).ReadBytes('\n')
	if err != nil {
		return Reply{}, fmt.Errorf("cannot read the answer to a policy sync: %w", err)
	}
	var rep Reply
	if err := strictjson.Decode(line, maxReply, &rep); err != nil {
		return Reply{}, fmt.Errorf("cannot parse the answer to a policy sync: %w", err)
	}
	return rep, nil
}
