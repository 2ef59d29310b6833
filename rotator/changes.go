package rotator

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/vault"
)

// ChangeMarker is the part of a Store that carries the change marker: one
// record that every operator command and -once writes after it changed a
// client's record, and that every daemon reads once per RereadInterval,
// so that a daemon notices such a change within RereadInterval in every
// phase (docs/design.md, "The change marker"). A Store without it, or a
// marker Vault refuses, leaves the daemon with its periodic re-reads.
type ChangeMarker interface {
	ChangesVersion(ctx context.Context) (int, error)
	BumpChanges(ctx context.Context, client, what string) error
}

// changeSignal wakes every idle client loop when the marker moves.
type changeSignal struct {
	mu sync.Mutex
	ch chan struct{}
}

// wait returns a channel closed at the next change.
func (s *changeSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
	}
	return s.ch
}

func (s *changeSignal) fire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch != nil {
		close(s.ch)
	}
	s.ch = make(chan struct{})
}

// bumpChanges tells daemons that this process changed c's record (best
// effort: they notice it within 10 × RereadInterval anyway).
func (r *Rotator) bumpChanges(ctx context.Context, c *Client, what string) {
	cm := r.opt.Changes
	if cm == nil {
		return
	}
	bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := cm.BumpChanges(bctx, c.Name, what); err != nil {
		r.logAt(err)("could not write the change marker; running daemons notice this change at their next periodic read of the record (grant update on the marker's path, see the README's policy)",
			zap.String("client", c.Name), zap.String("marker", vault.ChangesPath), zap.Error(err))
	}
}

// bumpOnce writes the change marker after each transition of a -once run
// (staged, overlap, stable), so that running daemons show its rotation
// within RereadInterval, not at their next periodic read (simulation seed
// 8052: a -once's completion reached an idle daemon's metrics 5 minutes
// late).
func (r *Rotator) bumpOnce(ctx context.Context, st *run, what string) {
	if st.trig.Reason == ReasonOnce {
		r.bumpChanges(ctx, st.c, what)
	}
}

// watchChanges reads the change marker every RereadInterval and wakes the
// idle client loops when it moved from last (read before the loops
// started; err is that read's error).
func (r *Rotator) watchChanges(ctx context.Context, cm ChangeMarker, last int, err error) {
	warned := false
	for {
		if err != nil && !warned {
			warned = true
			r.logAt(err)("cannot read the change marker; an operator's change to a stable client is noticed at the next periodic read of its record (10 × rotation.reread_interval) instead of within rotation.reread_interval (grant read on the marker's path, see the README's policy)",
				zap.String("marker", vault.ChangesPath), zap.Error(err))
		}
		if err := r.sleep(ctx, r.opt.RereadInterval, nil, nil); err != nil {
			return
		}
		var v int
		v, err = r.markerVersion(ctx, cm)
		if err == nil && v != last {
			last = v
			r.log.Debug("change marker moved: reading the records again", zap.Int("version", v))
			r.changes.fire()
		}
	}
}

// markerVersion reads the marker within one RereadInterval: a read that
// hangs (an answer held on the way) must not stop the watch, which is
// what bounds an operator's change reaching the daemon (simulation seed
// 2993: a held read kept a daemon from noticing a -once for minutes).
func (r *Rotator) markerVersion(ctx context.Context, cm ChangeMarker) (int, error) {
	rctx, cancel := context.WithTimeout(ctx, r.opt.RereadInterval)
	defer cancel()
	return cm.ChangesVersion(rctx)
}

// logAt is the level of a line about a failed marker request: ERROR when
// Vault denied it (a policy to fix, like every denial), WARN otherwise.
func (r *Rotator) logAt(err error) func(string, ...zap.Field) {
	if errors.Is(err, vault.ErrDenied) {
		return r.log.Error
	}
	return r.log.Warn
}
