package rotator

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Run is the daemon: one goroutine per client that first resumes whatever
// is in flight (and catches up a rotation older than max_age), then rotates
// on the client's cron schedule, jittered. It returns when ctx ends; every
// state is in Vault, so nothing is lost.
func (r *Rotator) Run(ctx context.Context, clients []*Client) {
	var wg sync.WaitGroup
	for _, c := range clients {
		if r.opt.Metrics != nil {
			r.opt.Metrics.InitClient(c.Name)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.loop(ctx, c)
		}()
	}
	wg.Wait()
}

func (r *Rotator) loop(ctx context.Context, c *Client) {
	trig := Trigger{Reason: ReasonStartup, Time: r.clock.Now(), MaxAge: c.MaxAge}
	for {
		out, err := r.Rotate(ctx, c, trig)
		if ctx.Err() != nil {
			return
		}
		now := r.clock.Now()
		scheduled := c.Schedule.Next(now)
		if scheduled.IsZero() {
			r.log.Error("schedule has no next run; client left alone", zap.String("client", c.Name))
			return
		}
		at := scheduled
		if c.Jitter > 0 {
			at = at.Add(time.Duration(r.opt.Rand.Int64N(int64(c.Jitter))))
		}
		nextTrig := Trigger{Reason: ReasonSchedule, Time: scheduled}
		if err != nil && out.Result == ResultFailed {
			// A missing or malformed record, or a step given up: the
			// operator may fix it any time, so try the same trigger again
			// soon instead of waiting for the next scheduled run.
			if retry := now.Add(r.opt.RetryMax); retry.Before(at) {
				at, nextTrig = retry, trig
			}
		}
		r.status.nextRun(c.Name, at)
		if r.opt.Metrics != nil {
			r.opt.Metrics.NextRotation(c.Name, at)
		}
		r.log.Debug("next run scheduled", zap.String("client", c.Name), zap.Time("at", at))
		if err := r.sleep(ctx, at.Sub(now), nil); err != nil {
			return
		}
		trig = nextTrig
	}
}
