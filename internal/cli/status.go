package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// statusOptions are the flags of -status.
type statusOptions struct {
	status bool
	output string // "table" or "json"
}

func registerStatusFlags(fs *flag.FlagSet, o *statusOptions) {
	fs.BoolVar(&o.status, "status", false, "show every client's record (or -client's) from Vault: phase, rotation, next run, grace left, lease, last error, last action; never a secret. Exit 1 if a record cannot be read")
	fs.StringVar(&o.output, "o", "table", "with -status: output format, table or json")
}

// checkStatusFlags refuses flag combinations -status does not take.
func checkStatusFlags(f flags) error {
	if !f.st.status {
		if f.st.output != "table" {
			return errors.New("-o is only meaningful with -status")
		}
		return nil
	}
	if f.st.output != "table" && f.st.output != "json" {
		return fmt.Errorf("-o %q: want table or json", f.st.output)
	}
	if f.once || f.validate || f.action() != "" {
		return errors.New("-status cannot be combined with -once, -validate or an operator action")
	}
	return nil
}

// Record states in -status.
const (
	stateOK        = rotator.StateOK
	stateMissing   = "missing"   // no record at the path (it never held a version)
	stateDeleted   = "deleted"   // the latest version is deleted or destroyed
	stateMalformed = "malformed" // the record cannot be interpreted
	stateError     = "error"     // Vault refused or failed the read
)

// StatusReport is what `-status -o json` prints: one entry per configured
// client (or the one named by -client), read from Vault. It never holds a
// secret.
type StatusReport struct {
	GeneratedAt time.Time      `json:"generated_at"`
	Vault       string         `json:"vault,omitempty"`
	Clients     []ClientRecord `json:"clients"`
}

// ClientRecord is one client's entry in a StatusReport.
type ClientRecord struct {
	Client    string `json:"client"`
	Path      string `json:"path"` // the record, e.g. "secret/affix/prod"
	Bootstrap bool   `json:"bootstrap,omitempty"`
	// State is ok, missing, deleted, malformed or error; Error says why
	// when it is not ok.
	State   string `json:"state"`
	Error   string `json:"error,omitempty"`
	Version int    `json:"version,omitempty"` // KV v2 version read

	Phase      string     `json:"phase,omitempty"`
	RotationID string     `json:"rotation_id,omitempty"`
	ClientID   string     `json:"client_id,omitempty"`
	RotatedAt  *time.Time `json:"rotated_at,omitempty"`
	AgeSeconds *int64     `json:"age_seconds,omitempty"` // since rotated_at
	// NextRun is the next scheduled rotation when the record decides it
	// (it may be in the past: overdue, rotated as soon as a daemon runs);
	// NextRunNote explains it, or why there is no time.
	NextRun     *time.Time `json:"next_run,omitempty"`
	NextRunNote string     `json:"next_run_note,omitempty"`
	// GraceUntil is set in overlap; GraceLeftSeconds is 0 once it has passed.
	GraceUntil       *time.Time `json:"grace_until,omitempty"`
	GraceLeftSeconds *int64     `json:"grace_left_seconds,omitempty"`
	LeaseOwner       string     `json:"lease_owner,omitempty"`
	LeaseUntil       *time.Time `json:"lease_until,omitempty"`
	LeaseActive      bool       `json:"lease_active,omitempty"`
	// RetryNotBefore is shown only while it is in the future.
	RetryNotBefore *time.Time `json:"retry_not_before,omitempty"`
	// StagedAt and GracePeriod describe the rotation in flight (or the
	// last one); StepError and FailingSince why its current step fails
	// and since when. LastError is why the last rotation was aborted.
	StagedAt     *time.Time    `json:"staged_at,omitempty"`
	GracePeriod  string        `json:"grace_period,omitempty"`
	StepError    string        `json:"step_error,omitempty"`
	FailingSince *time.Time    `json:"failing_since,omitempty"`
	LastError    string        `json:"last_error,omitempty"`
	LastAction   *ActionRecord `json:"last_action,omitempty"`
	// ReconcileClaim* is the last reconcile claim in the record's custom
	// metadata: who last sent a stable client's [current] to Affix, and
	// when that request ended at the latest.
	ReconcileClaimOwner string     `json:"reconcile_claim_owner,omitempty"`
	ReconcileClaimUntil *time.Time `json:"reconcile_claim_until,omitempty"`
}

// ActionRecord is a record's last operator action.
type ActionRecord struct {
	Action     string     `json:"action"`
	By         string     `json:"by,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	At         *time.Time `json:"at,omitempty"`
	RotationID string     `json:"rotation_id,omitempty"`
}

// recordReader is what -status needs of the store.
type recordReader interface {
	Read(ctx context.Context, path string) (vault.Record, int, error)
	Path(path string) string
}

// runStatus reads the selected clients' records from Vault and prints them.
// Exit 0 when every record could be read (a missing record of a bootstrap
// client counts as read), 1 otherwise.
func runStatus(ctx context.Context, cfg *config.Config, f flags, env Env) int {
	selected := cfg.Clients
	if f.client != "" {
		selected = nil
		for _, c := range cfg.Clients {
			if c.Name == f.client {
				selected = append(selected, c)
			}
		}
	}
	auth, err := vaultAuth(cfg.Vault.Auth, env.Getenv)
	// The records' last_error and Vault's errors are outside text.
	secrets := &redact.Set{Min: minRedacted}
	secrets.AddValues(auth.Token)
	addAPIKeys(secrets, cfg, env.Getenv)
	env.Stdout = redact.Writer{W: env.Stdout, Set: secrets}
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid config %s:\n%v\n", f.config, err)
		return ExitUsage
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the store's token renewal
	store, connErr := vault.New(ctx, vault.Config{
		Address: cfg.Vault.Address, Namespace: cfg.Vault.Namespace, KVMount: cfg.Vault.KVMount,
		Timeout: cfg.Vault.Timeout.D(), CACert: cfg.Vault.TLS.CACert, InsecureSkipVerify: cfg.Vault.TLS.InsecureSkipVerify,
		Auth: auth, Logger: zap.NewNop(),
	})
	if connErr == nil {
		defer closeStore(store, zap.NewNop())
	}
	addr, _ := cfg.VaultAddr(env.Getenv) // Main refused a bad VAULT_ADDR
	addr = withoutUserinfo(addr)
	rep := StatusReport{GeneratedAt: time.Now().UTC(), Vault: addr}
	var reader recordReader
	if connErr == nil {
		reader = store
	}
	rep.Clients = readStatus(ctx, reader, connErr, cfg, selected, rep.GeneratedAt)

	failed := 0
	for _, c := range rep.Clients {
		if !c.readable() {
			failed++
		}
	}
	if f.st.output == "json" {
		enc := json.NewEncoder(env.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintf(env.Stderr, "affix-rotator: -status: %v\n", err)
			return ExitFailed
		}
	} else if err := writeStatusTable(env.Stdout, rep); err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: -status: %v\n", err)
		return ExitFailed
	}
	if failed > 0 {
		fmt.Fprintf(env.Stderr, "affix-rotator: -status: %d of %d records could not be read\n", failed, len(rep.Clients))
		return ExitFailed
	}
	return ExitOK
}

func (c ClientRecord) readable() bool {
	return c.State == stateOK || (c.State == stateMissing && c.Bootstrap)
}

// readStatus reads the records, a few at a time. With no reader (Vault
// could not be reached or refused the token), every client carries connErr.
func readStatus(ctx context.Context, r recordReader, connErr error, cfg *config.Config, selected []config.Client, now time.Time) []ClientRecord {
	out := make([]ClientRecord, len(selected))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, cc := range selected {
		out[i] = ClientRecord{Client: cc.Name, Path: kvPath(cfg, cc), Bootstrap: cc.Bootstrap}
		if r == nil {
			out[i].State, out[i].Error = stateError, connErr.Error()
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			rec, version, err := r.Read(ctx, cc.VaultPath)
			out[i].Version = version
			if err != nil {
				describeReadError(&out[i], r.Path(cc.VaultPath), version, err)
				return
			}
			out[i].State = stateOK
			fillStatus(&out[i], cc, rec, now)
		}()
	}
	wg.Wait()
	return out
}

func kvPath(cfg *config.Config, cc config.Client) string {
	mount := strings.Trim(cfg.Vault.KVMount, "/")
	if mount == "" {
		mount = "secret"
	}
	return mount + "/" + cc.VaultPath
}

func describeReadError(c *ClientRecord, path string, version int, err error) {
	var me *vault.MalformedError
	switch {
	case errors.As(err, &me):
		c.State, c.Error = stateMalformed, err.Error()
	case errors.Is(err, vault.ErrNotFound) && version > 0:
		c.State = stateDeleted
		c.Error = fmt.Sprintf("the latest version (%d) of %s is deleted or destroyed: restore it with `vault kv undelete -versions=%d %s`, or roll back to an older version with `vault kv rollback -version=<n> %s` (bootstrap never applies to it)",
			version, path, version, path, path)
	case errors.Is(err, vault.ErrNotFound):
		c.State, c.Error = stateMissing, err.Error()
		if c.Bootstrap {
			c.Error = fmt.Sprintf("no record at %s yet: bootstrap is on, the first rotation creates it", path)
		}
	default:
		c.State, c.Error = stateError, err.Error()
	}
}

// fillStatus copies what people need from the record: never a secret.
func fillStatus(c *ClientRecord, cc config.Client, rec vault.Record, now time.Time) {
	c.Phase, c.RotationID, c.ClientID = string(rec.Phase), rec.RotationID, rec.ClientID
	if !rec.RotatedAt.IsZero() {
		c.RotatedAt = utc(rec.RotatedAt)
		age := int64(now.Sub(rec.RotatedAt) / time.Second)
		c.AgeSeconds = &age
	}
	switch rec.Phase {
	case vault.PhaseStaged:
		c.NextRunNote = "a rotation is in flight (staged): a daemon or -once resumes it at once"
	case vault.PhaseOverlap:
		c.GraceUntil = utc(rec.GraceUntil)
		left := max(int64(0), int64(rec.GraceUntil.Sub(now)/time.Second))
		c.GraceLeftSeconds = &left
		c.NextRunNote = "a rotation is in flight (overlap): the old secret is dropped when the grace ends; the next is scheduled from its completion"
	default:
		sched, err := config.ParseSchedule(cc.Schedule)
		if err != nil { // config.Load has checked it
			c.NextRunNote = "schedule: " + err.Error()
			break
		}
		next, ok := rotator.NextDue(sched, cc.MaxAge.D(), rec.RotatedAt, now)
		anchor := rotator.SeedAnchor(rec)
		switch {
		case !ok && rec.RotatedAt.IsZero() && !anchor.IsZero():
			// The daemon anchors a seeded record where it was seeded.
			if at := sched.Next(anchor); !at.IsZero() {
				c.NextRun = utc(at)
				c.NextRunNote = fmt.Sprintf("no rotated_at: the schedule counts from when the record was seeded (%s)", stamp(anchor))
			} else {
				c.NextRunNote = "never: the schedule does not fire again"
			}
		case !ok && rec.RotatedAt.IsZero():
			c.NextRunNote = "no rotated_at: at the daemon's next start + schedule"
		case !ok:
			c.NextRunNote = "never: the schedule does not fire again"
		case rec.RotatedAt.IsZero():
			c.NextRun = utc(next)
			c.NextRunNote = "no rotated_at and max_age is set: due now"
		case !next.After(now):
			c.NextRun = utc(next)
			c.NextRunNote = "overdue: rotated as soon as a daemon runs"
		default:
			c.NextRun = utc(next)
		}
		if j := cc.Jitter.D(); j > 0 && c.NextRun != nil {
			c.NextRunNote = strings.TrimPrefix(c.NextRunNote+"; ", "; ") + "plus a random delay of up to " + j.String()
		}
	}
	if rec.LeaseOwner != "" {
		c.LeaseOwner, c.LeaseUntil = rec.LeaseOwner, utc(rec.LeaseUntil)
		c.LeaseActive = now.Before(rec.LeaseUntil)
	}
	if rec.RetryNotBefore.After(now) {
		c.RetryNotBefore = utc(rec.RetryNotBefore)
	}
	c.LastError = rec.LastError
	c.StagedAt, c.StepError, c.FailingSince = utc(rec.StagedAt), rec.StepError, utc(rec.FailingSince)
	if len(rec.Claims) > 0 { // the latest
		c.ReconcileClaimOwner, c.ReconcileClaimUntil = rec.Claims[0].Owner, utc(rec.Claims[0].Until)
	}
	if rec.GracePeriod > 0 {
		c.GracePeriod = rec.GracePeriod.String()
	}
	if a := rec.LastAction; a != nil {
		c.LastAction = &ActionRecord{Action: a.Action, By: a.By, Reason: a.Reason, RotationID: a.RotationID}
		if !a.At.IsZero() {
			c.LastAction.At = utc(a.At)
		}
	}
}

func utc(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// writeStatusTable prints the report for people: one table line per client,
// then what does not fit a column (errors, last error, last action, a 429's
// floor), one line each.
func writeStatusTable(w io.Writer, rep StatusReport) error {
	now := rep.GeneratedAt
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tPHASE\tROTATION\tROTATED AT\tAGE\tNEXT RUN\tGRACE LEFT\tLEASE")
	var notes []string
	for _, c := range rep.Clients {
		phase := c.Phase
		if c.State != stateOK {
			phase = c.State
		}
		next := "-"
		switch {
		case c.NextRun != nil && c.NextRun.After(now):
			next = fmt.Sprintf("%s (in %s)", stamp(*c.NextRun), human(c.NextRun.Sub(now)))
		case c.NextRun != nil:
			next = "overdue since " + stamp(*c.NextRun)
		case c.Phase == string(vault.PhaseStaged) || c.Phase == string(vault.PhaseOverlap):
			next = "after the rotation in flight"
		case c.State == stateOK && c.RotatedAt == nil:
			next = "at the daemon's next start + schedule"
		case c.State == stateOK:
			next = "never"
		}
		grace := "-"
		if c.GraceUntil != nil {
			if c.GraceUntil.After(now) {
				grace = fmt.Sprintf("%s (until %s)", human(c.GraceUntil.Sub(now)), stamp(*c.GraceUntil))
			} else {
				grace = fmt.Sprintf("ended %s ago", human(now.Sub(*c.GraceUntil)))
			}
		}
		lease := "-"
		if c.LeaseOwner != "" {
			switch {
			case c.LeaseActive:
				lease = fmt.Sprintf("%s (%s left)", c.LeaseOwner, human(c.LeaseUntil.Sub(now)))
			case c.LeaseUntil != nil:
				lease = fmt.Sprintf("%s (expired %s ago)", c.LeaseOwner, human(now.Sub(*c.LeaseUntil)))
			default:
				lease = c.LeaseOwner + " (no expiry)"
			}
		}
		rotatedAt, age := "-", "-"
		if c.RotatedAt != nil {
			rotatedAt, age = stamp(*c.RotatedAt), human(now.Sub(*c.RotatedAt))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Client, phase, dash(c.RotationID), rotatedAt, age, next, grace, lease)

		if c.Error != "" {
			notes = append(notes, fmt.Sprintf("%s: %s: %s", c.Client, c.State, c.Error))
		}
		if c.NextRunNote != "" && c.NextRun != nil {
			notes = append(notes, fmt.Sprintf("%s: next run: %s", c.Client, c.NextRunNote))
		}
		if c.RetryNotBefore != nil {
			notes = append(notes, fmt.Sprintf("%s: retry not before %s (in %s): Affix asked to wait (429)", c.Client, stamp(*c.RetryNotBefore), human(c.RetryNotBefore.Sub(now))))
		}
		if c.StepError != "" {
			s := fmt.Sprintf("%s: step failing", c.Client)
			if c.FailingSince != nil {
				s += fmt.Sprintf(" since %s (%s)", stamp(*c.FailingSince), human(now.Sub(*c.FailingSince)))
			}
			notes = append(notes, fmt.Sprintf("%s on rotation %s: %s", s, dash(c.RotationID), c.StepError))
		}
		if c.GracePeriod != "" && c.Phase != string(vault.PhaseStable) {
			notes = append(notes, fmt.Sprintf("%s: grace of this rotation: %s", c.Client, c.GracePeriod))
		}
		if c.LastError != "" {
			notes = append(notes, fmt.Sprintf("%s: last error: %s", c.Client, c.LastError))
		}
		if a := c.LastAction; a != nil {
			s := fmt.Sprintf("%s: last action: %s", c.Client, a.Action)
			if a.By != "" {
				s += " by " + a.By
			}
			if a.At != nil {
				s += fmt.Sprintf(" at %s (%s ago)", stamp(*a.At), human(now.Sub(*a.At)))
			}
			if a.RotationID != "" {
				s += " on rotation " + a.RotationID
			}
			if a.Reason != "" {
				s += fmt.Sprintf(": %q", a.Reason)
			}
			notes = append(notes, s)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		if _, err := fmt.Fprintf(w, "\n%s\n", strings.Join(notes, "\n")); err != nil {
			return err
		}
	}
	return nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// human renders a duration for people: "21d4h", "3h07m", "4m05s", "12s".
func human(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		return fmt.Sprintf("%dd%dh", d/(24*time.Hour), (d%(24*time.Hour))/time.Hour)
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, (d%time.Hour)/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm%02ds", d/time.Minute, (d%time.Minute)/time.Second)
	default:
		return fmt.Sprintf("%ds", d/time.Second)
	}
}
