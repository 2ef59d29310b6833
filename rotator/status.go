package rotator

import (
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/affix-rotator/affix-rotator/vault"
)

// ClientStatus is one client's entry in /status. It never holds a secret.
type ClientStatus struct {
	Client string `json:"client"`
	// State is "ok" once the record has been read (Phase then says where
	// the rotation stands), or "unknown" before it could be read;
	// StateReason then says why. -status uses the same words (and adds
	// missing, deleted, malformed and error, which it reads itself).
	State        string     `json:"state"`
	StateReason  string     `json:"state_reason,omitempty"`
	Phase        string     `json:"phase,omitempty"`
	RotationID   string     `json:"rotation_id,omitempty"`
	GraceUntil   *time.Time `json:"grace_until,omitempty"`
	RotatedAt    *time.Time `json:"rotated_at,omitempty"`
	NextRun      *time.Time `json:"next_run,omitempty"`
	LeaseOwner   string     `json:"lease_owner,omitempty"`
	LeaseUntil   *time.Time `json:"lease_until,omitempty"`
	Waiting      string     `json:"waiting,omitempty"`
	LastResult   string     `json:"last_result,omitempty"`
	LastResultAt *time.Time `json:"last_result_at,omitempty"`
	LastError    string     `json:"last_error,omitempty"`
	LastErrorAt  *time.Time `json:"last_error_at,omitempty"`
	// From the record: when the rotation in flight was staged and its
	// grace, and why its current step fails and since when (any process).
	StagedAt     *time.Time `json:"staged_at,omitempty"`
	GracePeriod  string     `json:"grace_period,omitempty"`
	StepError    string     `json:"step_error,omitempty"`
	FailingSince *time.Time `json:"failing_since,omitempty"`
	// The last reconcile claim (the record's custom metadata): who last
	// sent a stable client's [current], and by when that request ended.
	ReconcileClaimOwner string     `json:"reconcile_claim_owner,omitempty"`
	ReconcileClaimUntil *time.Time `json:"reconcile_claim_until,omitempty"`
}

type statusBoard struct {
	mu      sync.Mutex
	m       map[string]*ClientStatus
	started time.Time
	actions map[string]time.Time // per client, the time of the last operator action seen
	denied  map[string]error     // per client, Vault's refusal of its last request, if it was refused
}

// States of a client in /status and -status.
const (
	// StateUnknown is a client's state before its record could be read.
	StateUnknown = "unknown"
	// StateOK: the record was read; its phase says the rest.
	StateOK = "ok"
)

func newStatusBoard(started time.Time) *statusBoard {
	return &statusBoard{m: map[string]*ClientStatus{}, started: started, actions: map[string]time.Time{}, denied: map[string]error{}}
}

// newAction reports whether an operator action recorded at at is one this
// process has not seen yet and that happened since it started.
func (b *statusBoard) newAction(client string, at time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !at.After(b.actions[client]) || at.Before(b.started) {
		return false
	}
	b.actions[client] = at
	return true
}

func (b *statusBoard) get(name string) *ClientStatus {
	s, ok := b.m[name]
	if !ok {
		s = &ClientStatus{Client: name, State: StateUnknown, StateReason: "the record has not been read yet"}
		b.m[name] = s
	}
	return s
}

func tp(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func (b *statusBoard) record(name string, rec vault.Record) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(name)
	s.Phase, s.RotationID, s.LeaseOwner = string(rec.Phase), rec.RotationID, rec.LeaseOwner
	s.GraceUntil, s.RotatedAt, s.LeaseUntil = tp(rec.GraceUntil), tp(rec.RotatedAt), tp(rec.LeaseUntil)
	s.Waiting = ""
	s.State, s.StateReason = StateOK, ""
	s.Phase = string(phaseOr(rec.Phase))
	s.StagedAt, s.StepError, s.FailingSince = tp(rec.StagedAt), rec.StepError, tp(rec.FailingSince)
	s.ReconcileClaimOwner, s.ReconcileClaimUntil = "", nil
	if len(rec.Claims) > 0 { // the latest
		s.ReconcileClaimOwner, s.ReconcileClaimUntil = rec.Claims[0].Owner, tp(rec.Claims[0].Until)
	}
	s.GracePeriod = ""
	if rec.GracePeriod > 0 {
		s.GracePeriod = rec.GracePeriod.String()
	}
	delete(b.denied, name)
	if rec.LastError != "" {
		s.LastError = rec.LastError
	}
}

func (b *statusBoard) waiting(name, why string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(name).Waiting = why
}

func (b *statusBoard) attemptFailed(name string, err error, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(name)
	s.LastError, s.LastErrorAt = err.Error(), tp(now)
	if s.State == StateUnknown {
		s.StateReason = "cannot read the record: " + err.Error()
	}
}

func (b *statusBoard) result(name, result string, err error, now time.Time) {
	if result == "" && err == nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.get(name)
	s.Waiting = ""
	if result != "" {
		s.LastResult, s.LastResultAt = result, tp(now)
	}
	if result == ResultSuccess {
		// An earlier attempt's error is history once a rotation succeeds.
		s.LastError, s.LastErrorAt = "", nil
	}
	if err != nil {
		s.LastError, s.LastErrorAt = err.Error(), tp(now)
	}
}

func (b *statusBoard) nextRun(name string, t time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(name).NextRun = tp(t)
}

// add lists a configured client (state unknown until its record is read).
func (b *statusBoard) add(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.get(name)
}

// remove forgets a client that is no longer configured.
func (b *statusBoard) remove(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.m, name)
	delete(b.denied, name)
}

func (b *statusBoard) setDenied(name string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.denied[name] = err
}

// Denied returns Vault's refusal of the last request made for some client
// (a revoked token, a policy that does not cover the client's path), or
// nil: the daemon is then not ready (/readyz).
func (r *Rotator) Denied() error {
	r.status.mu.Lock()
	defer r.status.mu.Unlock()
	names := make([]string, 0, len(r.status.denied))
	for n := range r.status.denied {
		names = append(names, n)
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	return fmt.Errorf("vault denied the requests for client %q: %w", names[0], r.status.denied[names[0]])
}

// Status returns a snapshot of every client's status, sorted by name.
func (r *Rotator) Status() []ClientStatus {
	r.status.mu.Lock()
	defer r.status.mu.Unlock()
	out := make([]ClientStatus, 0, len(r.status.m))
	for _, s := range r.status.m {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Client < out[j].Client })
	return out
}
