package vault

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Action is an operator action recorded in a record's last_action field
// (docs/design.md, operator actions): what was done, by whom, why and when.
// It never holds a secret.
type Action struct {
	// Action names what was done, e.g. "end-grace" or "extend-grace".
	Action string
	// By is who did it: the Vault token's display name and entity (see
	// Store.WhoAmI), never the token itself.
	By string
	// Reason is the operator's -reason text.
	Reason string
	// At is when the action was recorded.
	At time.Time
	// RotationID is the rotation the action applied to, if any.
	RotationID string
}

// actionWire is Action as stored: a JSON object of strings, like every
// other field of the record.
type actionWire struct {
	Action     string `json:"action"`
	By         string `json:"by,omitempty"`
	Reason     string `json:"reason,omitempty"`
	At         string `json:"at,omitempty"`
	RotationID string `json:"rotation_id,omitempty"`
}

// encode renders the action as compact JSON.
func (a *Action) encode() string {
	w := actionWire{Action: a.Action, By: a.By, Reason: a.Reason, RotationID: a.RotationID}
	if !a.At.IsZero() {
		w.At = a.At.UTC().Format(time.RFC3339Nano)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // readable in `vault kv get`
	if err := enc.Encode(w); err != nil {
		// Strings always encode; this cannot happen.
		panic("vault: encode last_action: " + err.Error())
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// decodeAction parses the last_action field. Its problems name the field
// and never quote the value (an operator's reason is free text).
func decodeAction(s string) (*Action, error) {
	const example = `must be a JSON object such as {"action":"end-grace","by":"token-ops","reason":"leaked","at":"2026-01-02T15:04:05Z"}`
	var w actionWire
	dec := json.NewDecoder(strings.NewReader(s))
	if err := dec.Decode(&w); err != nil || dec.More() {
		return nil, &MalformedError{Field: FieldLastAction, Problem: example}
	}
	if w.Action == "" {
		return nil, &MalformedError{Field: FieldLastAction, Problem: `"action" is missing or empty`}
	}
	a := &Action{Action: w.Action, By: w.By, Reason: w.Reason, RotationID: w.RotationID}
	if w.At != "" {
		t, err := time.Parse(time.RFC3339Nano, w.At)
		if err != nil {
			return nil, &MalformedError{Field: FieldLastAction, Problem: `"at" must be an RFC 3339 time such as 2026-01-02T15:04:05Z`}
		}
		a.At = t
	}
	return a, nil
}
