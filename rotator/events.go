package rotator

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/notify"
	"github.com/affix-rotator/affix-rotator/vault"
)

// Event is something that happened to a client's rotation, reported
// through Options.Events for webhook notifications (docs/notifications.md).
// Its JSON form is the notification's "data". It never holds a secret.
type Event struct {
	// ID is the same for one event whichever process reports it (an
	// operator action is reported by the process that took it and by a
	// daemon that sees it in the record), so receivers can deduplicate.
	ID string `json:"-"`
	// Type is one of the notify.Event* types.
	Type string `json:"-"`
	// At is when it happened (for an operator action, when it was taken).
	At time.Time `json:"-"`

	Client     string     `json:"client"`
	VaultPath  string     `json:"vault_path"`
	RotationID string     `json:"rotation_id,omitempty"`
	Phase      string     `json:"phase,omitempty"`
	GraceUntil *time.Time `json:"grace_until,omitempty"`
	RotatedAt  *time.Time `json:"rotated_at,omitempty"`
	InstanceID string     `json:"instance_id"`
	// Trigger says why a rotation started (rotation.started): schedule,
	// once, startup or bootstrap.
	Trigger string `json:"trigger,omitempty"`
	// Error says why a rotation was aborted or failed (never a secret, as
	// every error of the rotator).
	Error string `json:"error,omitempty"`
	// Action is the operator action (operator.action).
	Action *EventAction `json:"action,omitempty"`
}

// EventAction is an operator action as reported in an event.
type EventAction struct {
	Action string    `json:"action"`
	By     string    `json:"by"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// emit reports an event about c at rec, if anyone listens. Options.Events
// is called on the rotation's goroutine and must not block.
func (r *Rotator) emit(typ string, c *Client, rec vault.Record, mod func(*Event)) {
	if r.opt.Events == nil {
		return
	}
	e := Event{Type: typ, At: r.clock.Now().UTC(), Client: c.Name, VaultPath: c.VaultPath, RotationID: rec.RotationID,
		Phase: string(rec.Phase), GraceUntil: tp(rec.GraceUntil), RotatedAt: tp(rec.RotatedAt), InstanceID: r.opt.InstanceID}
	if mod != nil {
		mod(&e)
	}
	e.ID = eventID(e)
	r.opt.Events(e)
}

// eventID derives the event's webhook-id from what identifies it: its
// type, client, rotation and time (for an operator action, the time it
// was taken, which every process reads from the record).
func eventID(e Event) string {
	h := sha256.New()
	for _, s := range []string{e.Type, e.Client, e.RotationID, e.At.UTC().Format(time.RFC3339Nano)} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	if e.Action != nil {
		h.Write([]byte(e.Action.Action + "\x00" + e.Action.By))
	}
	return "msg_" + hex.EncodeToString(h.Sum(nil)[:16])
}

// actionSeen logs and reports an operator action recorded in rec, once per
// process (the one that took it, or a daemon that reads it; a notification
// has one id whichever process sends it), and mirrors the record's last
// action into last_operator_action_timestamp_seconds. It counts nothing:
// an action is counted once, by the process that performs it
// (actionPerformed), not by whoever happens to read it.
func (r *Rotator) actionSeen(c *Client, rec vault.Record) {
	a := rec.LastAction
	if a != nil && r.opt.Metrics != nil {
		r.opt.Metrics.LastAction(c.Name, a.Action, a.At)
	}
	if a == nil || !r.status.newAction(c.Name, a.At) {
		return
	}
	r.log.Info("operator action seen in the record", append(fields(c, rec), zap.String("action", a.Action), zap.String("by", a.By), zap.String("reason", a.Reason), zap.Time("at", a.At))...)
	r.emit(notify.EventOperatorAction, c, rec, func(e *Event) {
		e.At = a.At.UTC()
		if a.RotationID != "" {
			e.RotationID = a.RotationID
		}
		e.Action = &EventAction{Action: a.Action, By: a.By, Reason: a.Reason, At: a.At.UTC()}
	})
}

// errorText is an error's message for an event ("" for none).
func errorText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// Message is the event as a notification to send (notify.Notifier.Send).
func (e Event) Message() notify.Message {
	return notify.Message{ID: e.ID, Type: e.Type, Time: e.At, Data: e}
}

// actionPerformed counts an operator action this process performed.
func (r *Rotator) actionPerformed(c *Client, action string) {
	if r.opt.Metrics != nil {
		r.opt.Metrics.OperatorAction(c.Name, action)
	}
}
