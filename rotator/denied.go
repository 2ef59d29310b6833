package rotator

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/vault"
)

// deniedHint says what to check when Vault refuses a request on a client's
// record: the token's validity and the policy on the record's KV v2 paths,
// in the README's least privilege: read and update, plus create only for a
// client that bootstrap: true has not created yet.
func (r *Rotator) deniedHint(c *Client) string {
	full := c.VaultPath
	mount := "<mount>"
	if p, ok := r.opt.Store.(interface{ Path(string) string }); ok {
		full = p.Path(c.VaultPath)
		mount = full[:len(full)-len(c.VaultPath)-1]
	}
	grants := "read and update"
	if c.Bootstrap {
		grants = "read and update, and create while bootstrap: true has not made the record yet,"
	}
	return fmt.Sprintf("vault denied the request on %s: check that the token is valid (`vault token lookup`: not expired or revoked) and that its policy grants %s on %s/data/%s (`vault token capabilities %s/data/%s`)",
		full, grants, mount, c.VaultPath, mount, c.VaultPath)
}

// denied handles a request Vault refused (vault.ErrDenied). It is not an
// outage: retrying does not help until someone fixes the token or the
// policy. With Options.FailOnDenied (-once) the rotation fails at once (the
// record stays as it is, to be resumed); the daemon logs an ERROR saying
// what to check, marks itself not ready (Denied) and keeps retrying, since
// a policy can be fixed while it runs.
func (r *Rotator) denied(st *run, rec vault.Record, err error) decision {
	hint := r.deniedHint(st.c)
	if r.opt.FailOnDenied {
		return r.fail(st, rec, fmt.Errorf("%s: %w", hint, err))
	}
	now := r.clock.Now()
	if r.opt.Metrics != nil {
		r.opt.Metrics.StepError(st.c.Name, phaseOr(rec.Phase))
	}
	d := st.bo.Next()
	r.log.Error(hint+"; will retry", append(fields(st.c, rec), zap.Error(err), zap.Duration("retry_in", d))...)
	r.status.attemptFailed(st.c.Name, err, now)
	r.status.setDenied(st.c.Name, err)
	why := fmt.Sprintf("retrying in %s after: %v", d.Round(time.Millisecond), err)
	return decision{wait: d, progress: &Progress{Client: st.c.Name, Phase: rec.Phase, RotationID: rec.RotationID, GraceUntil: rec.GraceUntil, Now: now, Waiting: why}}
}

func isDenied(err error) bool { return errors.Is(err, vault.ErrDenied) }
