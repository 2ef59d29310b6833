package vault

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzDecode: any KV data decodes to a record that passes its own checks
// and re-encodes to data that decodes to the same record, or is rejected
// with a MalformedError that names no value.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"client_secret":"a"}`,
		`{"client_secret":"a","pending_client_secret":"b","phase":"staged","rotation_id":"r"}`,
		`{"client_secret":"a","previous_client_secret":"b","phase":"overlap","rotation_id":"r","grace_until":"2026-01-01T00:00:00Z"}`,
		`{"client_secret":"a","last_action":"{\"action\":\"end-grace\",\"by\":\"token-ops\",\"reason\":\"leaked\",\"at\":\"2026-01-01T00:00:00Z\",\"rotation_id\":\"r\"}"}`,
		`{"client_secret":"a","last_action":"{not json"}`, `{"client_secret":"a","last_action":"{\"action\":\"x\",\"at\":\"soon\"}"}`,
		`{"client_secret":1}`, `{"phase":"weird","client_secret":"a"}`, `{"client_secret":"a","rotated_at":"yesterday"}`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var data map[string]any
		if json.Unmarshal(b, &data) != nil {
			return
		}
		r, err := Decode(data)
		if err != nil {
			for _, k := range []string{FieldClientSecret, FieldPreviousClientSecret, FieldPendingClientSecret} {
				if s, ok := data[k].(string); ok && len(s) >= 12 && strings.Contains(err.Error(), s) {
					t.Fatalf("error shows a value: %v", err)
				}
			}
			return
		}
		r2, err := Decode(r.Encode())
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if !r2.ClientSecret.Equal(r.ClientSecret) || r2.Phase != r.Phase || !r2.GraceUntil.Equal(r.GraceUntil) || r2.RotationID != r.RotationID {
			t.Fatal("round trip changed the record")
		}
		if (r.LastAction == nil) != (r2.LastAction == nil) || r.LastAction != nil && !sameAction(*r.LastAction, *r2.LastAction) {
			t.Fatal("round trip changed last_action")
		}
	})
}

func sameAction(a, b Action) bool {
	return a.Action == b.Action && a.By == b.By && a.Reason == b.Reason && a.RotationID == b.RotationID && a.At.Equal(b.At)
}
