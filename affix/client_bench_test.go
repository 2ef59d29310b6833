package affix_test

import (
	"testing"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// BenchmarkUpdateRequestMarshalJSON renders an overlap update with every optional field.
func BenchmarkUpdateRequestMarshalJSON(b *testing.B) {
	name := "Your App"
	req := affix.UpdateRequest{
		ClientSecret: []secret.Value{secret.New("0123abcd-0123abcd-0123abcd-0123abcd"), secret.New("4567ef01-4567ef01-4567ef01-4567ef01")},
		Name:         &name,
		RedirectURIs: []string{"https://app.example.com/callback"},
		WebhookURI:   affix.Nullable{Set: true, Null: true},
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := req.Body(); err != nil {
			b.Fatal(err)
		}
	}
}
