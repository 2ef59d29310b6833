package vault_test

import (
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// BenchmarkRecordRoundTrip encodes an overlap record to KV data and decodes it back.
func BenchmarkRecordRoundTrip(b *testing.B) {
	now := time.Date(2026, 11, 23, 1, 2, 3, 4, time.UTC)
	rec := vault.Record{
		ClientSecret:         secret.New("0123abcd-0123abcd-0123abcd-0123abcd"),
		PreviousClientSecret: secret.New("4567ef01-4567ef01-4567ef01-4567ef01"),
		Phase:                vault.PhaseOverlap,
		RotationID:           "0011223344556677",
		GraceUntil:           now.Add(24 * time.Hour),
		RotatedAt:            now.Add(-720 * time.Hour),
		ClientID:             "cid-prod",
		LeaseOwner:           "affix-rotator-0",
		LeaseUntil:           now.Add(24*time.Hour + 5*time.Minute),
		Extra:                map[string]any{"owner": "team-payments"},
	}
	b.ReportAllocs()
	for b.Loop() {
		got, err := vault.Decode(rec.Encode())
		if err != nil || got.Phase != vault.PhaseOverlap {
			b.Fatal(err)
		}
	}
}
