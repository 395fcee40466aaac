package tokend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/edgeseal/edgeseal/internal/strictjson"
	"github.com/edgeseal/edgeseal/tokenclient"
)

// ErrBadRequest: the request could not be read or parsed; the caller is told so.
var ErrBadRequest = errors.New("bad request")

// readRequest reads one request line of at most tokenclient.MaxRequestSize bytes.
func readRequest(r io.Reader) (tokenclient.Request, error) {
	br := bufio.NewReaderSize(io.LimitReader(r, tokenclient.MaxRequestSize), tokenclient.MaxRequestSize)
	line, err := br.ReadSlice('\n')
	switch {
	case errors.Is(err, bufio.ErrBufferFull), errors.Is(err, io.EOF) && len(line) >= tokenclient.MaxRequestSize:
		return tokenclient.Request{}, fmt.Errorf("%w: longer than %d bytes", ErrBadRequest, tokenclient.MaxRequestSize)
	case errors.Is(err, io.EOF):
		return tokenclient.Request{}, fmt.Errorf("%w: the connection ended before a request line (one line of JSON ending in a newline)", ErrBadRequest)
	case err != nil:
		return tokenclient.Request{}, fmt.Errorf("cannot read request: %w", err)
	}
	return ParseRequest(line)
}

// ParseRequest parses one request line: a JSON object with the fields of
// tokenclient.Request and nothing else, followed by a newline.
func ParseRequest(line []byte) (tokenclient.Request, error) {
	var req tokenclient.Request
	if len(line) > tokenclient.MaxRequestSize {
		return req, fmt.Errorf("%w: longer than %d bytes", ErrBadRequest, tokenclient.MaxRequestSize)
	}
	body, ok := bytes.CutSuffix(line, []byte("\n"))
	if !ok || bytes.ContainsAny(body, "\n") {
		return req, fmt.Errorf("%w: a request is one line of JSON ending in a newline", ErrBadRequest)
	}
	if err := strictjson.Decode(body, tokenclient.MaxRequestSize, &req); err != nil {
		return tokenclient.Request{}, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if req.V != tokenclient.ProtocolVersion {
		return tokenclient.Request{}, fmt.Errorf("%w: protocol version %d, this provider speaks %d", ErrBadRequest, req.V, tokenclient.ProtocolVersion)
	}
	if req.Service != "" && !validServiceName(req.Service) {
		return tokenclient.Request{}, fmt.Errorf("%w: %q is not a service name", ErrBadRequest, req.Service)
	}
	return req, nil
}

// validServiceName is config's rule for names: [a-z0-9][a-z0-9_-]{0,63}.
func validServiceName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i, c := range []byte(s) {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '_' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}
