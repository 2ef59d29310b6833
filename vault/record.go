package vault

import (
	"fmt"
	"sort"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Phase is where a client's rotation stands.
type Phase string

// The phases of docs/design.md.
const (
	// PhaseStable: client_secret is the only secret Affix accepts.
	PhaseStable Phase = "stable"
	// PhaseStaged: pending_client_secret is generated and stored, not yet confirmed by Affix.
	PhaseStaged Phase = "staged"
	// PhaseOverlap: Affix accepts client_secret (new) and previous_client_secret (old) until grace_until.
	PhaseOverlap Phase = "overlap"
)

// Field names of the KV v2 record. Consumers read FieldClientSecret and nothing else.
const (
	FieldClientSecret         = "client_secret"
	FieldPreviousClientSecret = "previous_client_secret"
	FieldPendingClientSecret  = "pending_client_secret"
	FieldPhase                = "phase"
	FieldRotationID           = "rotation_id"
	FieldGraceUntil           = "grace_until"
	FieldRotatedAt            = "rotated_at"
	FieldClientID             = "client_id"
	FieldLeaseOwner           = "lease_owner"
	FieldLeaseUntil           = "lease_until"
	FieldLastError            = "last_error"
	FieldRetryNotBefore       = "retry_not_before"
	FieldLastAction           = "last_action"
	FieldStagedAt             = "staged_at"
	FieldGracePeriod          = "grace_period"
	FieldGraceBy              = "grace_by"
	FieldStepError            = "step_error"
	FieldFailingSince         = "failing_since"
	FieldSeededAt             = "seeded_at"
	FieldRotatedID            = "rotated_id"
)

var ownFields = map[string]bool{
	FieldClientSecret: true, FieldPreviousClientSecret: true, FieldPendingClientSecret: true,
	FieldPhase: true, FieldRotationID: true, FieldGraceUntil: true, FieldRotatedAt: true,
	FieldClientID: true, FieldLeaseOwner: true, FieldLeaseUntil: true, FieldLastError: true,
	FieldRetryNotBefore: true, FieldLastAction: true,
	FieldStagedAt: true, FieldGracePeriod: true, FieldGraceBy: true, FieldStepError: true,
	FieldFailingSince: true, FieldSeededAt: true, FieldRotatedID: true,
}

// Record is one Affix client's KV v2 secret: the consumers' current secret and
// the rotator's state, so that every transition is one check-and-set write.
type Record struct {
	ClientSecret         secret.Value // current: always accepted by Affix
	PreviousClientSecret secret.Value // only in overlap
	PendingClientSecret  secret.Value // only in staged
	Phase                Phase
	RotationID           string
	GraceUntil           time.Time // overlap: earliest time the old secret may be dropped
	RotatedAt            time.Time // last completed rotation
	// RotatedID is the rotation_id rotated_at belongs to: an overlap whose
	// rotation_id equals it was completed once (an operator reopened its
	// grace), so ending that grace keeps rotated_at.
	RotatedID  string
	ClientID   string
	LeaseOwner string
	LeaseUntil time.Time
	LastError  string // last definite failure, never containing a secret
	// RetryNotBefore is a 429's floor: no process sends to Affix for this
	// client before it, whoever holds the lease.
	RetryNotBefore time.Time
	// LastAction is the last operator action on this client (nil: none),
	// stored as compact JSON in the field last_action.
	LastAction *Action
	// StagedAt is when the rotation in rotation_id was staged: a -once is
	// satisfied only by a rotation staged at or after it, and a rotated_at
	// later than it says that rotation completed once already.
	StagedAt time.Time
	// GracePeriod is the grace of the rotation in flight, written when it
	// is staged (an operator's -once -grace travels with it): whoever
	// confirms the rotation sets grace_until from it. Zero: the client's
	// configured grace_period (records written before this field).
	GracePeriod time.Duration
	// GraceBy is the instance id of the process that wrote grace_until: a
	// process with another id (another clock) drops the old secret only
	// after grace_until plus the clock-skew margin.
	GraceBy string
	// StepError and FailingSince say why the current step of rotation_id
	// has been failing, and since when. They are cleared by every
	// transition, so they always belong to the rotation and phase they are
	// written with.
	StepError    string
	FailingSince time.Time
	// SeededAt anchors the schedule of a record that has no rotated_at
	// (seeded by hand): the created_time of the version first seen without
	// one, carried over by every write until the first rotation completes.
	SeededAt time.Time
	// VersionTime is Vault's created_time of the version read (metadata,
	// never written as a field); zero when unknown.
	VersionTime time.Time
	// Claims are the reconcile claims in the key's custom metadata
	// (claim.go; metadata, never written as a field), latest end first: the
	// ones a read found, or the ones Vault answered a write of this record
	// with.
	Claims []Claim
	// Extra keeps fields the rotator does not own (an operator's annotations),
	// so that writing the record back loses nothing.
	Extra map[string]any
}

// LeasedBy reports whether owner holds an unexpired lease at now.
func (r Record) LeasedBy(owner string, now time.Time) bool {
	return r.LeaseOwner == owner && now.Before(r.LeaseUntil)
}

// Encode renders the record as KV v2 data: strings only, absent fields omitted.
func (r Record) Encode() map[string]any {
	m := make(map[string]any, len(r.Extra)+8)
	for k, v := range r.Extra {
		if !ownFields[k] {
			m[k] = v
		}
	}
	put := func(k, v string) {
		if v != "" {
			m[k] = v
		}
	}
	putTime := func(k string, t time.Time) {
		if !t.IsZero() {
			m[k] = t.UTC().Format(time.RFC3339Nano)
		}
	}
	put(FieldClientSecret, r.ClientSecret.Reveal())
	put(FieldPreviousClientSecret, r.PreviousClientSecret.Reveal())
	put(FieldPendingClientSecret, r.PendingClientSecret.Reveal())
	put(FieldPhase, string(r.Phase))
	put(FieldRotationID, r.RotationID)
	putTime(FieldGraceUntil, r.GraceUntil)
	putTime(FieldRotatedAt, r.RotatedAt)
	put(FieldClientID, r.ClientID)
	put(FieldLeaseOwner, r.LeaseOwner)
	putTime(FieldLeaseUntil, r.LeaseUntil)
	put(FieldLastError, r.LastError)
	putTime(FieldRetryNotBefore, r.RetryNotBefore)
	if r.LastAction != nil {
		m[FieldLastAction] = r.LastAction.encode()
	}
	putTime(FieldStagedAt, r.StagedAt)
	if r.GracePeriod > 0 {
		m[FieldGracePeriod] = r.GracePeriod.String()
	}
	put(FieldGraceBy, r.GraceBy)
	put(FieldRotatedID, r.RotatedID)
	put(FieldStepError, r.StepError)
	putTime(FieldFailingSince, r.FailingSince)
	putTime(FieldSeededAt, r.SeededAt)
	return m
}

// MalformedError says why a record cannot be used. It names fields, never values.
type MalformedError struct {
	Path    string // KV path, filled by the store
	Field   string
	Problem string
}

func (e *MalformedError) Error() string {
	where := "record"
	if e.Path != "" {
		where = "record " + e.Path
	}
	if e.Field == "" {
		return fmt.Sprintf("vault: %s is malformed: %s (fix it by hand with `vault kv patch`; the rotator will not overwrite it)", where, e.Problem)
	}
	return fmt.Sprintf("vault: %s is malformed: field %q: %s (fix it by hand with `vault kv patch`; the rotator will not overwrite it)", where, e.Field, e.Problem)
}

// Decode parses KV v2 data into a Record and checks that it is one of the
// states of docs/design.md. A record with a client_secret and no phase is
// stable (that is how an operator seeds it).
func Decode(data map[string]any) (Record, error) {
	var r Record
	str := func(k string) (string, error) {
		v, ok := data[k]
		if !ok || v == nil {
			return "", nil
		}
		s, ok := v.(string)
		if !ok {
			return "", &MalformedError{Field: k, Problem: fmt.Sprintf("must be a string, not %s", typeName(v))}
		}
		return s, nil
	}
	tm := func(k string) (time.Time, error) {
		s, err := str(k)
		if err != nil || s == "" {
			return time.Time{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, &MalformedError{Field: k, Problem: "must be an RFC 3339 time such as 2026-01-02T15:04:05Z"}
		}
		return t, nil
	}
	var err error
	var cur, prev, pend, phase string
	for _, f := range []struct {
		k string
		p *string
	}{
		{FieldClientSecret, &cur}, {FieldPreviousClientSecret, &prev}, {FieldPendingClientSecret, &pend},
		{FieldPhase, &phase}, {FieldRotationID, &r.RotationID}, {FieldClientID, &r.ClientID},
		{FieldLeaseOwner, &r.LeaseOwner}, {FieldLastError, &r.LastError},
		{FieldGraceBy, &r.GraceBy}, {FieldStepError, &r.StepError}, {FieldRotatedID, &r.RotatedID},
	} {
		if *f.p, err = str(f.k); err != nil {
			return Record{}, err
		}
	}
	for _, f := range []struct {
		k string
		p *time.Time
	}{{FieldGraceUntil, &r.GraceUntil}, {FieldRotatedAt, &r.RotatedAt}, {FieldLeaseUntil, &r.LeaseUntil}, {FieldRetryNotBefore, &r.RetryNotBefore},
		{FieldStagedAt, &r.StagedAt}, {FieldFailingSince, &r.FailingSince}, {FieldSeededAt, &r.SeededAt}} {
		if *f.p, err = tm(f.k); err != nil {
			return Record{}, err
		}
	}
	gp, err := str(FieldGracePeriod)
	if err != nil {
		return Record{}, err
	}
	if gp != "" {
		d, perr := time.ParseDuration(gp)
		if perr != nil || d <= 0 {
			return Record{}, &MalformedError{Field: FieldGracePeriod, Problem: "must be a positive Go duration such as 24h or 30m"}
		}
		r.GracePeriod = d
	}
	la, err := str(FieldLastAction)
	if err != nil {
		return Record{}, err
	}
	if la != "" {
		if r.LastAction, err = decodeAction(la); err != nil {
			return Record{}, err
		}
	}
	r.ClientSecret, r.PreviousClientSecret, r.PendingClientSecret = secret.New(cur), secret.New(prev), secret.New(pend)
	for k, v := range data {
		if !ownFields[k] {
			if r.Extra == nil {
				r.Extra = map[string]any{}
			}
			r.Extra[k] = v
		}
	}
	if phase == "" {
		if pend != "" || prev != "" {
			return Record{}, &MalformedError{Field: FieldPhase, Problem: "missing, but the record holds a pending or previous secret; set phase to staged or overlap"}
		}
		phase = string(PhaseStable)
	}
	r.Phase = Phase(phase)
	if err := r.check(); err != nil {
		return Record{}, err
	}
	return r, nil
}

// check verifies that the fields present fit the phase.
func (r Record) check() error {
	bad := func(field, problem string) error {
		return &MalformedError{Field: field, Problem: problem}
	}
	switch r.Phase {
	case PhaseStable:
		if r.ClientSecret.IsZero() {
			return bad(FieldClientSecret, "missing or empty")
		}
		if !r.PendingClientSecret.IsZero() {
			return bad(FieldPendingClientSecret, "present in phase stable (only allowed in staged)")
		}
		if !r.PreviousClientSecret.IsZero() {
			return bad(FieldPreviousClientSecret, "present in phase stable (only allowed in overlap)")
		}
	case PhaseStaged:
		if r.PendingClientSecret.IsZero() {
			return bad(FieldPendingClientSecret, "missing in phase staged")
		}
		if r.PendingClientSecret.Equal(r.ClientSecret) {
			return bad(FieldPendingClientSecret, "equals client_secret")
		}
		if !r.PreviousClientSecret.IsZero() {
			return bad(FieldPreviousClientSecret, "present in phase staged (only allowed in overlap)")
		}
		if r.RotationID == "" {
			return bad(FieldRotationID, "missing in phase staged")
		}
	case PhaseOverlap:
		if r.ClientSecret.IsZero() {
			return bad(FieldClientSecret, "missing or empty")
		}
		if r.PreviousClientSecret.IsZero() {
			return bad(FieldPreviousClientSecret, "missing in phase overlap")
		}
		if r.PreviousClientSecret.Equal(r.ClientSecret) {
			return bad(FieldPreviousClientSecret, "equals client_secret")
		}
		if !r.PendingClientSecret.IsZero() {
			return bad(FieldPendingClientSecret, "present in phase overlap (only allowed in staged)")
		}
		if r.GraceUntil.IsZero() {
			return bad(FieldGraceUntil, "missing in phase overlap")
		}
		if r.RotationID == "" {
			return bad(FieldRotationID, "missing in phase overlap")
		}
	default:
		return bad(FieldPhase, "unknown value (want stable, staged or overlap)")
	}
	return nil
}

// ExtraKeys lists the names of the fields the rotator does not own, sorted.
func (r Record) ExtraKeys() []string {
	keys := make([]string, 0, len(r.Extra))
	for k := range r.Extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func typeName(v any) string {
	switch v.(type) {
	case bool:
		return "a boolean"
	case float64, int, int64, jsonNumber:
		return "a number"
	case []any:
		return "a list"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}

type jsonNumber interface{ Int64() (int64, error) }
