package vault_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/vault"
)

// TestRecordLastActionRoundTrip: last_action is stored as compact JSON (a
// string, like every other field) and decodes back to the same action.
func TestRecordLastActionRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 23, 9, 30, 0, 123, time.FixedZone("CET", 3600))
	rec := vault.Record{
		ClientSecret: secret.New("cur"), Phase: vault.PhaseStable,
		LastAction: &vault.Action{Action: "end-grace", By: "token-ops-alice (entity e-1)", Reason: `leaked in "#inc-42" <pager>`, At: at, RotationID: "r7"},
	}
	data := rec.Encode()
	raw, ok := data[vault.FieldLastAction].(string)
	if !ok {
		t.Fatalf("last_action is %T, want a string", data[vault.FieldLastAction])
	}
	want := `{"action":"end-grace","by":"token-ops-alice (entity e-1)","reason":"leaked in \"#inc-42\" <pager>","at":"2026-11-23T08:30:00.000000123Z","rotation_id":"r7"}`
	if raw != want {
		t.Fatalf("last_action\n got %s\nwant %s", raw, want)
	}
	got, err := vault.Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	la := got.LastAction
	if la == nil || la.Action != "end-grace" || la.By != rec.LastAction.By || la.Reason != rec.LastAction.Reason || !la.At.Equal(at) || la.RotationID != "r7" {
		t.Fatalf("round trip: %+v", la)
	}
	// No action: no field.
	rec.LastAction = nil
	if _, ok := rec.Encode()[vault.FieldLastAction]; ok {
		t.Fatal("a record without an action encodes last_action")
	}
	// A minimal action (no reason, by, rotation) round-trips too.
	rec.LastAction = &vault.Action{Action: "extend-grace"}
	if got, err := vault.Decode(rec.Encode()); err != nil || got.LastAction == nil || got.LastAction.Action != "extend-grace" || !got.LastAction.At.IsZero() {
		t.Fatalf("minimal action: %+v %v", got.LastAction, err)
	}
}

// TestRecordMalformedLastAction: a last_action that is not the JSON the
// rotator writes is a MalformedError naming the field, never quoting it.
func TestRecordMalformedLastAction(t *testing.T) {
	for name, v := range map[string]any{
		"not json":        `TOPSECRET{`,
		"json string":     `"TOPSECRET"`,
		"trailing data":   `{"action":"x"} TOPSECRET`,
		"no action":       `{"by":"TOPSECRET"}`,
		"bad time":        `{"action":"x","at":"TOPSECRET"}`,
		"number field":    `{"action":"x","reason":42}`,
		"null":            `null`,
		"not a string":    map[string]any{"action": "TOPSECRET"},
		"a number itself": 3.0,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := vault.Decode(map[string]any{"client_secret": "TOPSECRET-cur", vault.FieldLastAction: v})
			var me *vault.MalformedError
			if !errors.As(err, &me) || me.Field != vault.FieldLastAction {
				t.Fatalf("got %v, want a MalformedError on last_action", err)
			}
			if strings.Contains(err.Error(), "TOPSECRET") {
				t.Fatalf("error quotes the value: %v", err)
			}
		})
	}
}
