package vault

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClaimKey is the key of the record's KV v2 custom metadata that holds the
// reconcile claim.
const ClaimKey = "affix_rotator_reconcile"

// Claim is a stable client's reconcile claim: a process is about to send
// Affix the record's [current] and bounds that request by Until (on its own
// clock). It lives in the record's custom metadata, not in its data, so
// that an hourly reconcile adds no KV version and Vault's max_versions keeps
// the history -reaccept-previous reads (docs/design.md, "The reconcile
// claim").
//
// The claim is half of a handshake in which each side writes, then reads
// what the other wrote: a reconciler writes the claim and then reads the
// record, and sends nothing unless it is still stable and unleased; a
// process that moves the record out of stable gets the claim back in the
// answer to its own check-and-set write (Vault answers a data write with the
// key's custom metadata, under the key's lock) and sends nothing until a
// live claim it did not make has ended. Whichever of the two wrote second
// sees the other.
type Claim struct {
	Owner string    // "<instance id>/<run token>"
	Until time.Time // the claimant's request ends by then, on its clock
}

// IsZero reports whether no claim is recorded.
func (c Claim) IsZero() bool { return c.Owner == "" && c.Until.IsZero() }

// String is the claim as stored: "<owner> <until RFC 3339>".
func (c Claim) String() string {
	return c.Owner + " " + c.Until.UTC().Format(time.RFC3339Nano)
}

// ParseClaim reads a claim as stored. A value it cannot read (no process
// of ours writes one) is a claim by "?" that has already ended: it holds no
// request back, so a garbled metadata key cannot stop rotations.
func ParseClaim(s string) Claim {
	owner, until, ok := strings.Cut(strings.TrimSpace(s), " ")
	t, err := time.Parse(time.RFC3339Nano, until)
	if !ok || err != nil || owner == "" {
		return Claim{Owner: "?"}
	}
	return Claim{Owner: owner, Until: t}
}

// claimOf reads the claim out of a key's custom metadata.
func claimOf(cm map[string]any) Claim {
	v, ok := cm[ClaimKey]
	if !ok {
		return Claim{}
	}
	s, _ := v.(string)
	return ParseClaim(s)
}

// Claim records c as the reconcile claim of the record at path, in its
// custom metadata (a PATCH that adds no version and keeps every other
// metadata key). It needs the `patch` capability on
// `<mount>/metadata/<path>`. A record with no metadata (never written, or
// its metadata deleted) is ErrNotFound.
func (s *Store) Claim(ctx context.Context, path string, c Claim) error {
	start := time.Now()
	err := s.once(ctx, "claim", func() error {
		return s.kv.PatchMetadata(ctx, path, api.KVMetadataPatchInput{CustomMetadata: map[string]any{ClaimKey: c.String()}})
	})
	var re *api.ResponseError
	if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
		s.observe("claim", "not_found", start, true)
		return fmt.Errorf("vault: claim %s/%s: metadata: %w", s.mount, path, ErrNotFound)
	}
	if err != nil {
		return s.classify("claim", path, err, start)
	}
	s.observe("claim", "ok", start, true)
	return nil
}

// WriteClaimed is Write that also returns the reconcile claim the record's
// metadata held when Vault applied the write (the same metadata read, under
// the same lock, as the check-and-set).
func (s *Store) WriteClaimed(ctx context.Context, path string, r Record, cas int) (int, Claim, error) {
	kvs, err := s.write(ctx, path, r, cas)
	if err != nil {
		return 0, Claim{}, err
	}
	return kvs.VersionMetadata.Version, claimOf(kvs.CustomMetadata), nil
}

// errNoVersion is a write answered without version metadata.
func errNoVersion(mount, path string, cas int) error {
	return fmt.Errorf("vault: write %s/%s (cas %d): no version in the response", mount, path, cas)
}
