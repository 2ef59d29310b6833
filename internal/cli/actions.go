package cli

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// action returns the operator action the flags ask for ("" for none).
func (f flags) action() string {
	switch {
	case f.endGrace:
		return rotator.ActionEndGrace
	case f.extendGrace != 0:
		return rotator.ActionExtendGrace
	case f.reacceptPrevious != 0:
		return rotator.ActionReacceptPrevious
	}
	return ""
}

// incidentRetryTimeout is the default -retry-timeout of the incident
// commands: an on-call engineer learns within about a minute that Vault or
// Affix is down, instead of waiting 15 minutes (docs/runbook.md).
const incidentRetryTimeout = time.Minute

// incident reports whether the flags ask for an incident command: an
// operator action, or -once with an operator grace.
func (f flags) incident() bool { return f.action() != "" || (f.once && f.grace > 0) }

// checkAction checks the operator-action flags (set: the flags given); it
// returns what is wrong ("" if nothing).
func (f flags) checkAction(set map[string]bool) string {
	n := 0
	for _, a := range []string{"end-grace", "extend-grace", "reaccept-previous"} {
		if set[a] {
			n++
		}
	}
	switch {
	case n > 1:
		return "-end-grace, -extend-grace and -reaccept-previous are exclusive: one action at a time"
	case n == 1 && (f.once || f.validate):
		return "an operator action cannot be combined with -once or -validate"
	case set["extend-grace"] && f.extendGrace <= 0:
		return fmt.Sprintf("-extend-grace: the duration must be positive, got %s", f.extendGrace)
	case set["reaccept-previous"] && f.reacceptPrevious <= 0:
		return fmt.Sprintf("-reaccept-previous: the duration must be positive, got %s", f.reacceptPrevious)
	case set["grace"] && !f.once:
		return "-grace is only meaningful with -once"
	case set["grace"] && f.grace <= 0:
		return fmt.Sprintf("-grace: the duration must be positive, got %s", f.grace)
	case n == 1 && f.client == "":
		return "an operator action needs -client: it acts on one client"
	case set["grace"] && f.client == "":
		return "-once -grace needs -client: a shortened grace is for one client"
	case (n == 1 || set["grace"]) && strings.TrimSpace(f.reason) == "":
		return "an incident command needs -reason \"why\" (e.g. -reason \"INC-123: previous secret leaked\"): it is recorded in the audit log line and in the record's last_action"
	}
	return ""
}

// runAction carries out one operator action on the one selected client and
// reports it on stdout: exit 0 when done, 1 when refused or failed.
func runAction(ctx context.Context, rot *rotator.Rotator, store *vault.Store, c *rotator.Client, f flags, log *zap.Logger, env Env) int {
	audit, code := prepareAction(ctx, store, c, f.action(), f.reason, log, env)
	if code != ExitOK {
		return code
	}
	// Retries (Vault or Affix down) print a line saying when they stop.
	pr := newProgressPrinter(time.Minute, f.retryTimeout)
	rot.SetProgress(func(p rotator.Progress) {
		if line, ok := pr.line(p); ok {
			fmt.Fprintln(env.Stdout, line)
		}
	}, time.Minute)
	var msg string
	var err error
	switch f.action() {
	case rotator.ActionEndGrace:
		var out rotator.Outcome
		out, err = rot.EndGrace(ctx, c, audit)
		msg = fmt.Sprintf("%s: grace ended: Affix accepts only the current secret; the record is stable (rotation %s)", c.Name, out.RotationID)
	case rotator.ActionExtendGrace:
		var until time.Time
		until, err = rot.ExtendGrace(ctx, c, f.extendGrace, audit)
		msg = fmt.Sprintf("%s: grace extended: both secrets stay accepted until %s", c.Name, until.UTC().Format(time.RFC3339))
	case rotator.ActionReacceptPrevious:
		var until time.Time
		until, err = rot.ReacceptPrevious(ctx, c, f.reacceptPrevious, audit)
		msg = fmt.Sprintf("%s: Affix accepts the previous secret again, until %s; a running daemon drops it then (the record is back in overlap)", c.Name, until.UTC().Format(time.RFC3339))
	}
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()):
		fmt.Fprintf(env.Stdout, "%s: %s\n", c.Name, interrupted(f, c.Name))
		return ExitFailed
	case err != nil:
		fmt.Fprintf(env.Stdout, "%s: %s FAILED: %v\n", c.Name, f.action(), err)
		return ExitFailed
	}
	fmt.Fprintln(env.Stdout, msg)
	return ExitOK
}

// prepareAction finds who acts (for the audit) and checks that the token
// may write the record, before anything is changed.
func prepareAction(ctx context.Context, store *vault.Store, c *rotator.Client, action, reason string, log *zap.Logger, env Env) (rotator.Audit, int) {
	who, err := store.WhoAmI(ctx)
	if err != nil {
		fmt.Fprintf(env.Stdout, "%s: %s FAILED: cannot tell who the Vault token is (auth/token/lookup-self): %v\n", c.Name, action, err)
		return rotator.Audit{}, ExitFailed
	}
	caps, err := store.Capabilities(ctx, c.VaultPath)
	if err != nil {
		fmt.Fprintf(env.Stdout, "%s: %s FAILED: cannot check the Vault token's capabilities: %v\n", c.Name, action, err)
		return rotator.Audit{}, ExitFailed
	}
	for _, want := range []string{"read", "update"} {
		if !vault.HasCapability(caps[c.VaultPath], want) {
			fmt.Fprintf(env.Stdout, "%s: %s FAILED: the Vault token lacks the %q capability on %s (it has %v); nothing was changed\n", c.Name, action, want, store.DataPath(c.VaultPath), caps[c.VaultPath])
			return rotator.Audit{}, ExitFailed
		}
	}
	log.Info("operator action requested", zap.String("client", c.Name), zap.String("action", action), zap.String("by", who), zap.String("reason", reason))
	return rotator.Audit{By: who, Reason: reason}, ExitOK
}
