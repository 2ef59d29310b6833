package consumer

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

// Rotation is one change of a record's client_secret, as its KV v2 version
// history shows it.
type Rotation struct {
	// Version is the record version that made the new secret current.
	Version int
	// Fingerprint identifies the new secret (affixtest.Fingerprint).
	Fingerprint string
	// CurrentAt is that version's created_time: the first moment a
	// consumer could read the new secret from Vault.
	CurrentAt time.Time
	// GraceUntil is the record's grace_until in that version (zero if the
	// version has none).
	GraceUntil time.Time
}

// KeepVersions sets the record's max_versions to n, so that History sees
// every rotation of a long run: KV v2 keeps 10 versions by default, and a
// rotation writes three or more.
func KeepVersions(ctx context.Context, kv *api.KVv2, path string, n int) error {
	if err := kv.PutMetadata(ctx, path, api.KVMetadataPutInput{MaxVersions: n}); err != nil {
		return fmt.Errorf("vault: set max_versions of %s: %w", path, err)
	}
	return nil
}

// History returns every change of the record's client_secret, oldest
// first: each version whose client_secret differs from the version before
// it (the first version is not a change). Deleted and destroyed versions
// are skipped.
func History(ctx context.Context, kv *api.KVv2, path string) ([]Rotation, error) {
	versions, err := kv.GetVersionsAsList(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vault: list versions of %s: %w", path, err)
	}
	sort.Slice(versions, func(i, j int) bool { return versions[i].Version < versions[j].Version })
	var out []Rotation
	prev := ""
	for _, v := range versions {
		if v.Destroyed || !v.DeletionTime.IsZero() {
			continue
		}
		s, err := kv.GetVersion(ctx, path, v.Version)
		if err != nil {
			return nil, fmt.Errorf("vault: read %s version %d: %w", path, v.Version, err)
		}
		cur, _ := s.Data["client_secret"].(string)
		if prev != "" && cur != "" && cur != prev {
			r := Rotation{Version: v.Version, Fingerprint: affixtest.Fingerprint(cur), CurrentAt: v.CreatedTime}
			if g, ok := s.Data["grace_until"].(string); ok {
				r.GraceUntil, _ = time.Parse(time.RFC3339Nano, g)
			}
			out = append(out, r)
		}
		if cur != "" {
			prev = cur
		}
	}
	return out, nil
}

// Pickup is how late a consumer first held a rotation's new secret.
type Pickup struct {
	Rotation
	// Seen reports whether the consumer ever read the new secret.
	Seen bool
	// Late is from CurrentAt to the consumer's first read of it (to within
	// the consumer's Interval).
	Late time.Duration
}

// Pickups matches rotations with when the consumer first saw their new
// secrets.
func (c *Consumer) Pickups(rs []Rotation) []Pickup {
	out := make([]Pickup, 0, len(rs))
	for _, r := range rs {
		p := Pickup{Rotation: r}
		if t, ok := c.FirstSeen(r.Fingerprint); ok {
			p.Seen, p.Late = true, t.Sub(r.CurrentAt)
		}
		out = append(out, p)
	}
	return out
}
