package rotator

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Serve is Run over a set of clients that can change while it runs (the
// daemon's SIGHUP). Each value received on updates is the whole new set;
// clients are told apart by name:
//   - a name no longer in the set stops: its goroutine ends (a Rotate in
//     flight returns and releases its lease; the rotation stays in Vault, to
//     be resumed by whoever runs the client next), its /status entry and
//     its per-client series go;
//   - a new name starts, as at start-up (it resumes what is in flight);
//   - a name whose *Client is another value than before restarts its loop
//     with it, after the old loop has ended (never two loops for one client
//     in one process). Pass the same *Client to keep a loop running.
//
// Serve returns when ctx ends and every loop has returned. A nil updates
// channel is a fixed set (Run).
func (r *Rotator) Serve(ctx context.Context, clients []*Client, updates <-chan []*Client) {
	type running struct {
		c      *Client
		cancel context.CancelFunc
		done   chan struct{}
	}
	loops := map[string]*running{}
	start := func(c *Client) {
		if r.opt.Metrics != nil {
			r.opt.Metrics.InitClient(c.Name)
			r.opt.Metrics.SetExpectedInterval(c.Name, ExpectedInterval(c, r.clock.Now()))
		}
		r.status.add(c.Name)
		lctx, cancel := context.WithCancel(ctx)
		l := &running{c: c, cancel: cancel, done: make(chan struct{})}
		loops[c.Name] = l
		go func() {
			defer close(l.done)
			r.loop(lctx, c)
		}()
	}
	stop := func(l *running) {
		l.cancel()
		<-l.done
	}
	if cm := r.opt.Changes; cm != nil {
		// The marker's baseline is read before any client loop reads its
		// record: a change made between the two would otherwise be in
		// both, and never seen to move (simulation seed 1023: a -once
		// staged as a daemon started, which showed it only at its
		// periodic re-read).
		last, err := r.markerVersion(ctx, cm)
		go r.watchChanges(ctx, cm, last, err)
	}
	for _, c := range clients {
		start(c)
	}
	for {
		select {
		case <-ctx.Done():
			for _, l := range loops {
				<-l.done
			}
			return
		case set := <-updates:
			want := make(map[string]*Client, len(set))
			for _, c := range set {
				want[c.Name] = c
			}
			for name, l := range loops {
				c, ok := want[name]
				switch {
				case !ok:
					stop(l)
					delete(loops, name)
					r.status.remove(name)
					if r.opt.Metrics != nil {
						r.opt.Metrics.DropClient(name)
					}
					r.log.Info("client removed from the config: stopped (a rotation in flight stays in Vault and resumes wherever the client is run)", zap.String("client", name))
				case c != l.c:
					stop(l)
					delete(loops, name)
					r.log.Info("client changed in the config: restarting its loop with the new settings", zap.String("client", name))
				}
			}
			for _, c := range set {
				if _, ok := loops[c.Name]; !ok {
					start(c)
				}
			}
		}
	}
}

// DropClient deletes every series of a client that is no longer configured.
func (m *Metrics) DropClient(client string) {
	l := prometheus.Labels{"client": client}
	for _, v := range []interface {
		DeletePartialMatch(prometheus.Labels) int
	}{m.rotations, m.lastDuration, m.lastEndToEnd, m.lastFailure, m.expectedInterval, m.lastSuccess, m.nextRotation, m.phase, m.graceDeadline, m.stepErrors, m.affixRequests, m.reasserts, m.actions} {
		v.DeletePartialMatch(l)
	}
}
