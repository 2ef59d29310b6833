package vault

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// ClaimKeyPrefix starts the keys of the record's KV v2 custom metadata that
// hold reconcile claims: one key per instance id, so that no claim of one
// process ever hides another's.
const ClaimKeyPrefix = "affix_rotator_reconcile."

// MaxClaimSpan bounds every reconcile claim: a claimant's request ends at
// most this long after it wrote its claim, whatever its clock or its
// request timeout. A process that moves the record out of stable never
// waits longer than this (plus the clock-skew margin) after its own write,
// so a claim written by a clock running ahead cannot hold rotations back.
const MaxClaimSpan = 2 * time.Minute

// Claim is a stable client's reconcile claim: a process is about to send
// Affix the record's [current] and bounds that request by Until (on its own
// clock, at most MaxClaimSpan after it wrote the claim). Claims live in the
// record's custom metadata, not in its data, so that an hourly reconcile
// adds no KV version and Vault's max_versions keeps the history
// -reaccept-previous reads (docs/design.md, "The reconcile claim").
//
// The claim is half of a handshake in which each side writes, then reads
// what the other wrote: a reconciler writes its claim and then reads the
// record, and sends nothing unless it is still stable and unleased; a
// process that moves the record out of stable gets every claim back in the
// answer to its own check-and-set write (Vault answers a data write with
// the key's custom metadata, under the key's lock) and sends nothing until
// the live claims of others have ended. Whichever of the two wrote second
// sees the other.
type Claim struct {
	Owner string    // "<instance id>/<run token>"
	Until time.Time // the claimant's request ends by then, on its clock
	// Key is the custom metadata key the claim was read from ("" for a
	// claim not yet written).
	Key string
}

// IsZero reports whether c is no claim.
func (c Claim) IsZero() bool { return c.Owner == "" && c.Until.IsZero() }

// String is the claim as stored: "<owner> <until RFC 3339>".
func (c Claim) String() string {
	return c.Owner + " " + c.Until.UTC().Format(time.RFC3339Nano)
}

// Instance is the instance id part of the claim's owner.
func (c Claim) Instance() string {
	if i := strings.LastIndex(c.Owner, "/"); i >= 0 {
		return c.Owner[:i]
	}
	return c.Owner
}

// ClaimKey is the custom metadata key of an instance's claims: the
// instance id, or a digest of it when it is too long for a key.
func ClaimKey(instance string) string {
	if len(instance) > 96 {
		sum := sha256.Sum256([]byte(instance))
		instance = "sha256-" + hex.EncodeToString(sum[:12])
	}
	return ClaimKeyPrefix + instance
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

// claimsOf reads the claims out of a key's custom metadata, latest end
// first.
func claimsOf(cm map[string]any) []Claim {
	var out []Claim
	for k, v := range cm {
		if !strings.HasPrefix(k, ClaimKeyPrefix) {
			continue
		}
		s, _ := v.(string)
		c := ParseClaim(s)
		c.Key = k
		out = append(out, c)
	}
	SortClaims(out)
	return out
}

// SortClaims orders claims by their end, latest first (then by key).
func SortClaims(cs []Claim) {
	sort.Slice(cs, func(i, j int) bool {
		if !cs[i].Until.Equal(cs[j].Until) {
			return cs[i].Until.After(cs[j].Until)
		}
		return cs[i].Key < cs[j].Key
	})
}

// Claim records c as its instance's reconcile claim on the record at path,
// in its custom metadata, and removes the keys in drop (claims of other
// instances that ended long ago): one PATCH that adds no version and keeps
// every other metadata key. It needs the `patch` capability on
// `<mount>/metadata/<path>`. A record with no metadata (never written, or
// its metadata deleted) is ErrNotFound.
func (s *Store) Claim(ctx context.Context, path string, c Claim, drop []string) error {
	cm := map[string]any{ClaimKey(c.Instance()): c.String()}
	for _, k := range drop {
		if strings.HasPrefix(k, ClaimKeyPrefix) && k != ClaimKey(c.Instance()) {
			cm[k] = nil // JSON merge patch: removed
		}
	}
	start := time.Now()
	err := s.once(ctx, "claim", func() error {
		return s.kv.PatchMetadata(ctx, path, api.KVMetadataPatchInput{CustomMetadata: cm})
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

// WriteClaimed is Write that also returns the reconcile claims the record's
// metadata held when Vault applied the write (the same metadata read, under
// the same lock, as the check-and-set), latest end first.
func (s *Store) WriteClaimed(ctx context.Context, path string, r Record, cas int) (int, []Claim, error) {
	kvs, err := s.write(ctx, path, r, cas)
	if err != nil {
		return 0, nil, err
	}
	return kvs.VersionMetadata.Version, claimsOf(kvs.CustomMetadata), nil
}

// errNoVersion is a write answered without version metadata.
func errNoVersion(mount, path string, cas int) error {
	return fmt.Errorf("vault: write %s/%s (cas %d): no version in the response", mount, path, cas)
}
