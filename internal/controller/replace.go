package controller

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"

	"github.com/edgeseal/edgeseal/internal/fsutil"
	"github.com/edgeseal/edgeseal/internal/paths"
)

// replacedSuffix names an enrolment's files set aside while a new enrolment
// (`edgeseal controller enrol --force`) is made.
const replacedSuffix = ".replaced"

// Replacement is an enrolment set aside (SetAside) for a new one.
type Replacement struct {
	p     paths.Paths
	moved []string
}

// replaceable are the files of an enrolment in the order they are set
// aside: the enrolment first, since its presence is what says a device is
// enrolled (with it gone and NAME.replaced present, a replacement is under
// way), then the client key. They come back in the other order, so that an
// enrolment present always has its own key beside it.
func replaceable(p paths.Paths) []string { return []string{p.Enrolment, p.ClientKey} }

// SetAside moves the enrolment and the client key out of the way (to
// NAME.replaced), durably, so that Enrol may make a new one; Finish keeps the
// new one or puts the old one back. A process killed in between leaves the
// old enrolment in NAME.replaced, which the next LoadEnrolment or SetAside
// puts back (RecoverReplacement): a device never stays unenrolled because a
// replacement was cut short.
func SetAside(p paths.Paths) (*Replacement, error) {
	if err := RecoverReplacement(p); err != nil {
		return nil, err
	}
	r := &Replacement{p: p}
	for _, f := range replaceable(p) {
		switch err := os.Rename(f, f+replacedSuffix); {
		case err == nil:
			r.moved = append(r.moved, f)
		case errors.Is(err, fs.ErrNotExist):
		default:
			return nil, errors.Join(fmt.Errorf("cannot set the enrolment aside: %w", err), r.Finish(false))
		}
	}
	if len(r.moved) > 0 {
		if err := fsutil.SyncDir(p.Controller); err != nil {
			return nil, errors.Join(fmt.Errorf("cannot set the enrolment aside: %w", err), r.Finish(false))
		}
	}
	return r, nil
}

// Finish ends a replacement: with ok (the new enrolment is written) the old
// files are removed, else they are put back over whatever the failed
// enrolment left. Each step is durable before it returns.
func (r *Replacement) Finish(ok bool) error {
	if len(r.moved) == 0 {
		return nil
	}
	var errs []error
	if ok {
		for _, f := range r.moved {
			if err := os.Remove(f + replacedSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("cannot remove the replaced %s: %w", f, err))
			}
		}
	} else {
		for _, f := range slices.Backward(r.moved) {
			if err := os.Rename(f+replacedSuffix, f); err != nil {
				errs = append(errs, fmt.Errorf("cannot put back %s (it is in %s%s): %w", f, f, replacedSuffix, err))
			}
		}
	}
	if err := fsutil.SyncDir(r.p.Controller); err != nil {
		errs = append(errs, fmt.Errorf("cannot finish replacing the enrolment: %w", err))
	}
	r.moved = nil
	return errors.Join(errs...)
}

// RecoverReplacement puts right what a replacement cut short (a crash, a kill)
// left (LoadEnrolment and SetAside call it first): with no enrolment but one set aside, the one set aside comes back
// (the new one was never finished: a client key it made is overwritten);
// with an enrolment and files set aside, the new enrolment was written and
// the old files are removed. Nothing set aside: nothing to do, one lstat.
func RecoverReplacement(p paths.Paths) error {
	if _, err := os.Lstat(p.Enrolment + replacedSuffix); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Lstat(p.ClientKey + replacedSuffix); errors.Is(err, fs.ErrNotExist) {
			return nil
		}
	}
	_, err := os.Lstat(p.Enrolment)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cannot look for the enrolment: %w", err)
	}
	r := &Replacement{p: p}
	for _, f := range replaceable(p) {
		if _, err := os.Lstat(f + replacedSuffix); err == nil {
			r.moved = append(r.moved, f)
		}
	}
	if ferr := r.Finish(err == nil); ferr != nil {
		return fmt.Errorf("cannot recover from an enrolment replacement cut short: %w", ferr)
	}
	return nil
}
