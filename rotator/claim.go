package rotator

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// claimStore is the part of a Store that keeps the reconcile claim
// (vault.Claim; vault.Store and vaultmem have it). With it and
// Options.ReconcileClaims, reconciling a stable client writes no KV
// version: the claim goes in the record's custom metadata instead of a
// lease in its data. Without, a stable reconcile takes and releases the
// record's lease (two versions).
type claimStore interface {
	Claim(ctx context.Context, path string, c vault.Claim, drop []string) error
	WriteClaimed(ctx context.Context, path string, r vault.Record, cas int) (int, []vault.Claim, error)
}

// claimant names this run in a reconcile claim.
func (st *run) claimant(instance string) string { return instance + "/" + st.token }

// claimSpan bounds a reconcile request: the claim, the read after it and
// the request all end within it (never more than vault.MaxClaimSpan).
func (r *Rotator) claimSpan() time.Duration { return min(2*r.opt.RequestTimeout, vault.MaxClaimSpan) }

// claimDropAfter is how long after its end another instance's claim is
// removed by the next claim (a pod gone for good): long past any request
// it bounded, even on a clock running a little ahead.
const claimDropAfter = 24 * time.Hour

// staleClaims are the keys of other instances' claims that ended more than
// claimDropAfter ago, or cannot be read.
func staleClaims(cs []vault.Claim, own string, now time.Time) []string {
	var drop []string
	for _, c := range cs {
		if c.Key != vault.ClaimKey(own) && c.Until.Before(now.Add(-claimDropAfter)) {
			drop = append(drop, c.Key)
		}
	}
	return drop
}

// writeRecord is the check-and-set write of every transition and action:
// with a claimStore, the returned record carries the reconcile claim Vault
// answered the write with.
func (r *Rotator) writeRecord(ctx context.Context, path string, next vault.Record, ver int) (int, []vault.Claim, error) {
	if cs, ok := r.opt.Store.(claimStore); ok && r.opt.ReconcileClaims {
		return cs.WriteClaimed(ctx, path, next, ver)
	}
	v, err := r.opt.Store.Write(ctx, path, next, ver)
	return v, nil, err
}

// reconcileStable sends a stable, unleased record's [current] to Affix
// under a reconcile claim instead of the record's lease: claim, read the
// record again, and send only if nobody moved it meanwhile. A process that
// moves the record out of stable learns of the claim from its own write's
// answer and waits it out (postGate), so the two requests never cross.
// Nothing is written to the record: a stable client's reconcile adds no KV
// version, and the history -reaccept-previous needs stays within
// max_versions.
func (r *Rotator) reconcileStable(ctx context.Context, st *run, cs claimStore, rec vault.Record, ver int, now time.Time) decision {
	if g := floorGate(rec, st.floor, now); !g.ok {
		return r.waitFor(st, rec, now, g.wait, g.why)
	}
	claim := vault.Claim{Owner: st.claimant(r.opt.InstanceID), Until: now.Add(r.claimSpan())}
	if err := cs.Claim(ctx, st.c.VaultPath, claim, staleClaims(rec.Claims, r.opt.InstanceID, now)); err != nil {
		if ctx.Err() != nil {
			return decision{done: true, err: ctx.Err()}
		}
		if !errors.Is(err, vault.ErrUnavailable) {
			// Refused, not unreachable: a policy from before the claim (no
			// "patch" on the metadata path), a Vault without metadata
			// PATCH (405), custom metadata full (400). Reconcile as
			// before, under the record's lease, rather than not at all
			// (and never retry for ever: the client's loop runs one
			// rotation at a time, and the schedule waits behind it).
			r.log.Warn("vault refused the reconcile claim; this reconcile takes the record's lease instead, which writes two KV versions: grant \"patch\" on the record's metadata path (README, Vault policy)",
				append(fields(st.c, rec), zap.Error(err))...)
			st.claimRefused = true
			return again
		}
		return r.retry(st, rec, fmt.Errorf("recording the reconcile claim: %w", err))
	}
	st.wrote = nil
	_, aver, err := r.opt.Store.Read(ctx, st.c.VaultPath)
	if err != nil || aver != ver {
		return again // moved (or unreadable) since: the next step decides afresh
	}
	if _, err := r.postUnder(ctx, st, rec, []secret.Value{rec.ClientSecret}, claim.Until); err != nil {
		switch {
		case ctx.Err() != nil:
			return decision{done: true, err: ctx.Err()}
		case err == errLeaseShort:
			return again
		}
		d := r.backoff(ctx, st, rec, ver, err)
		if st.floor.After(rec.RetryNotBefore) && !d.done {
			// A 429 binds every process that sends with the API key: the
			// floor goes in the record now (a version: something
			// happened), not only when this run ends, as backoff does
			// under a lease (found by the simulation, seed 22).
			next := rec
			next.RetryNotBefore = st.floor
			st.carry(&next)
			if werr := r.write(ctx, st, next, ver); werr != nil {
				r.log.Warn("could not record affix's Retry-After in the record; another process may send before it ends", append(fields(st.c, rec), zap.Time("retry_not_before", st.floor), zap.Error(werr))...)
				r.lostWrite(st, next, ver, werr, func() decision { return again })
			}
		}
		return d
	}
	if st.late {
		return again // answered after the claim ended: ReassertStale, under the lease
	}
	st.reassert = ""
	if r.opt.Metrics != nil {
		r.opt.Metrics.Reassert(st.c.Name, ReassertReconcile)
	}
	r.log.Debug("reconciled: affix was sent the set the record implies (under a reconcile claim; the record is unchanged)", fields(st.c, rec)...)
	return decision{done: true}
}
