package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/rotator"
	"github.com/affix-rotator/affix-rotator/vault"
)

// validateTimeout bounds the online checks of -validate: one attempt, no
// retries.
const validateTimeout = 10 * time.Second

func registerValidateFlags(fs *flag.FlagSet, f *flags) {
	fs.BoolVar(&f.offline, "offline", false, "with -validate: check the file only (not the environment, not Vault)")
}

// affixNotChecked is -validate's one line about Affix: it never calls it.
const affixNotChecked = "Affix: not checked (-validate never calls Affix: its API has no call that tests the API key without changing which secrets it accepts; a wrong key shows at the first rotation, which aborts with 401 and leaves the current secret in place)"

// Whose fault a -validate problem is; the exit code follows from it.
type fault string

const (
	faultFile  fault = "file"        // exit 2
	faultEnv   fault = "environment" // exit 2
	faultVault fault = "vault"       // exit 1 (online checks)
)

type finding struct {
	fault fault
	err   *config.Error
}

// validation is what -validate found.
type validation struct {
	problems []finding
	warnings []*config.Error
	notes    []string // what was checked, for people
	runs     []string // each client's next runs
	clients  int
}

func (v *validation) add(f fault, es ...*config.Error) {
	for _, e := range es {
		v.problems = append(v.problems, finding{f, e})
	}
}

func (v *validation) count(f fault) int {
	n := 0
	for _, p := range v.problems {
		if p.fault == f {
			n++
		}
	}
	return n
}

// runValidate is -validate: the file (always), then, unless -offline, the
// environment and Vault. Every problem is reported, each once, with its key
// in the one format of config.Error. Exit 0 when there is no problem
// (warnings allowed), 2 when the file or the environment is wrong, 1 when
// only the online checks fail.
func runValidate(ctx context.Context, f flags, env Env) int {
	file, err := config.LoadFile(f.config)
	var v validation
	fileErrs := map[string]bool{} // keys Parse already complains about
	if err != nil {
		for _, e := range flatten(err) {
			var ce *config.Error
			if !errors.As(e, &ce) {
				ce = &config.Error{Key: f.config, Problem: e.Error()}
			}
			v.add(faultFile, ce)
			fileErrs[ce.Key] = true
		}
		if file == nil { // not YAML of the right shape: nothing more to check
			return v.report(env, f.config, ExitUsage)
		}
	}
	v.clients = len(file.Clients)
	v.notes = append(v.notes, affixNotChecked)
	now := time.Now().UTC()
	errs, warns := file.Lint(env.Getenv)
	for _, e := range errs {
		if !fileErrs[e.Key] {
			v.add(faultFile, e)
		}
	}
	v.warnings = append(warns, file.SecretFileWarnings()...)
	var recs map[string]recordState
	switch {
	case f.offline:
		v.notes = append(v.notes, "offline: the environment and Vault were not checked")
	case err != nil:
		v.add(faultEnv, file.Environment(env.Getenv)...)
		v.notes = append(v.notes, "Vault not checked: the file has errors")
	default:
		envErrs := file.Environment(env.Getenv)
		v.add(faultEnv, envErrs...)
		recs = v.online(ctx, file, env, envErrs)
	}
	if err != nil {
		return v.report(env, f.config, ExitUsage)
	}
	v.nextRuns(file, recs, now)
	return v.report(env, f.config, ExitOK)
}

// flatten returns the errors joined in err.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// report prints what was found and returns the exit code: code if there
// is no problem, else 2 for the file or the environment, 1 for Vault.
func (v *validation) report(env Env, source string, code int) int {
	for _, n := range v.notes {
		fmt.Fprintf(env.Stdout, "%s: %s\n", source, n)
	}
	if len(v.runs) > 0 {
		fmt.Fprintln(env.Stdout, "next runs (UTC):")
		for _, r := range v.runs {
			fmt.Fprintln(env.Stdout, "  "+r)
		}
	}
	for _, w := range v.warnings {
		fmt.Fprintf(env.Stderr, "%s: warning: %v\n", source, w)
	}
	for _, p := range v.problems {
		fmt.Fprintf(env.Stderr, "%s: error (%s): %v\n", source, p.fault, p.err)
	}
	nf, ne, nv := v.count(faultFile), v.count(faultEnv), v.count(faultVault)
	var parts []string
	if nf > 0 {
		parts = append(parts, plural(nf, "problem")+" in the file")
	}
	if ne > 0 {
		parts = append(parts, plural(ne, "problem")+" in the environment (not the file's fault: the file names them; set them where the daemon runs)")
	}
	if nv > 0 {
		parts = append(parts, plural(nv, "problem")+" found online, in Vault")
	}
	warn := ""
	if len(v.warnings) > 0 {
		warn = ", " + plural(len(v.warnings), "warning")
	}
	switch {
	case nf+ne > 0:
		code = ExitUsage
		fmt.Fprintf(env.Stderr, "%s: NOT OK: %s%s (exit 2: fix the file or the environment)\n", source, strings.Join(parts, ", "), warn)
	case nv > 0:
		code = ExitFailed
		fmt.Fprintf(env.Stderr, "%s: NOT OK: %s%s (exit 1: the file and the environment are fine; Vault is not ready for them)\n", source, strings.Join(parts, ", "), warn)
	default:
		fmt.Fprintf(env.Stdout, "%s: OK (%s%s)\n", source, plural(v.clients, "client"), warn)
	}
	return code
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}

// recordState is what the online checks learnt of one client's record.
type recordState struct {
	rec     vault.Record
	ok      bool // rec was read
	missing bool // no record, and bootstrap creates it
}

// credentialKey is the key naming where the Vault credential comes from.
func credentialKey(a config.VaultAuth) string {
	switch a.Method {
	case "approle":
		return "vault.auth.approle"
	case "kubernetes":
		return "vault.auth.kubernetes"
	}
	if a.TokenFile != "" {
		return "vault.auth.token_file"
	}
	return "vault.auth.token_env"
}

// online checks Vault: reachable, the credential accepted, the
// capabilities each client's record needs, each record readable (or
// missing with bootstrap). It returns what it read, by client name.
func (v *validation) online(ctx context.Context, file *config.File, env Env, envErrs []*config.Error) map[string]recordState {
	cfg := file.Config
	addr, err := cfg.VaultAddr(env.Getenv)
	if err != nil {
		v.notes = append(v.notes, "Vault not checked: VAULT_ADDR refused")
		return nil
	}
	if addr == "" {
		v.notes = append(v.notes, "Vault not checked: no address")
		return nil
	}
	addr = withoutUserinfo(addr)
	credKey := credentialKey(cfg.Vault.Auth)
	for _, e := range envErrs {
		if strings.HasPrefix(e.Key, "vault.") {
			v.notes = append(v.notes, "Vault not checked: its credential is missing ("+e.Key+")")
			return nil
		}
	}
	auth, err := vaultAuth(cfg.Vault.Auth, env.Getenv)
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) {
			ce = &config.Error{Key: credKey, Problem: err.Error()}
		}
		v.add(faultEnv, file.Problem(ce.Key, "%s", ce.Problem))
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, validateTimeout)
	defer cancel() // also stops the store's token renewal
	timeout := min(cfg.Vault.Timeout.D(), validateTimeout)
	store, err := vault.New(ctx, vault.Config{
		Address: cfg.Vault.Address, Namespace: cfg.Vault.Namespace, KVMount: cfg.Vault.KVMount,
		Timeout: timeout, CACert: cfg.Vault.TLS.CACert, InsecureSkipVerify: cfg.Vault.TLS.InsecureSkipVerify,
		Auth: auth, Logger: zap.NewNop(),
	})
	if err == nil {
		defer closeStore(store, zap.NewNop())
	}
	if err != nil {
		v.add(faultVault, connectProblem(file, addr, credKey, cfg.Vault.Auth.Method, err))
		return nil
	}
	who, err := store.WhoAmI(ctx)
	if err != nil {
		v.add(faultVault, file.Problem(credKey, "Vault at %s refused the token's own lookup (auth/token/lookup-self): %s", addr, oneLine(err.Error())))
		return nil
	}
	v.notes = append(v.notes, fmt.Sprintf("Vault %s: reachable; token valid (%s, auth method %s)", addr, who, cfg.Vault.Auth.Method))

	paths := make([]string, len(cfg.Clients))
	for i, cl := range cfg.Clients {
		paths[i] = cl.VaultPath
	}
	caps, err := store.Capabilities(ctx, paths...)
	if err != nil {
		v.add(faultVault, file.Problem(credKey, "cannot ask Vault for the token's capabilities (sys/capabilities-self, which the default policy grants): %v", err))
	}
	if mcaps, err := store.MetadataCapabilities(ctx, paths...); err == nil {
		for i, cl := range cfg.Clients {
			if !vault.HasCapability(mcaps[cl.VaultPath], "patch") {
				v.warnings = append(v.warnings, file.Problem(fmt.Sprintf("clients[%d].vault_path", i),
					"the token (%s) lacks patch on %s (it has: %s): each hourly reconcile then takes the record's lease instead of a claim in its metadata, two KV versions each, and Vault's max_versions cuts the history -reaccept-previous needs within hours: grant path %q { capabilities = [\"patch\"] }",
					who, store.MetadataPath(cl.VaultPath), strings.Join(mcaps[cl.VaultPath], ", "), store.MetadataPath(cl.VaultPath)))
			}
		}
	}
	recs := map[string]recordState{}
	for i, cl := range cfg.Clients {
		key := fmt.Sprintf("clients[%d].vault_path", i)
		canRead := true
		if caps != nil {
			need := []string{"read", "update"}
			if cl.Bootstrap {
				need = append(need, "create")
			}
			var lacks []string
			for _, c := range need {
				if !vault.HasCapability(caps[cl.VaultPath], c) {
					lacks = append(lacks, c)
				}
			}
			canRead = !slices.Contains(lacks, "read")
			if len(lacks) > 0 {
				why := "read and update (every rotation is a check-and-set write)"
				if cl.Bootstrap {
					why = "read, update and, with bootstrap, create (the first write makes the record)"
				}
				v.add(faultVault, file.Problem(key, "the token (%s) lacks %s on %s (it has: %s); the daemon needs %s: grant path %q { capabilities = [%s] }",
					who, quoteList(lacks), store.DataPath(cl.VaultPath), strings.Join(caps[cl.VaultPath], ", "), why, store.DataPath(cl.VaultPath), quoteList(need)))
			}
		}
		if !canRead {
			continue
		}
		rec, version, err := store.Read(ctx, cl.VaultPath)
		if err == nil {
			recs[cl.Name] = recordState{rec: rec, ok: true}
			continue
		}
		var cr ClientRecord
		cr.Bootstrap = cl.Bootstrap
		describeReadError(&cr, store.Path(cl.VaultPath), version, err)
		switch cr.State {
		case stateMissing:
			if cl.Bootstrap {
				recs[cl.Name] = recordState{missing: true}
				v.notes = append(v.notes, fmt.Sprintf("client %q: no record at %s yet: bootstrap is on, the first rotation creates it", cl.Name, store.Path(cl.VaultPath)))
				continue
			}
			v.add(faultVault, file.Problem(key, "no record: %v", err))
		case stateMalformed:
			v.add(faultVault, file.Problem(key, "the record is malformed: %s", cr.Error))
		default:
			v.add(faultVault, file.Problem(key, "%s: %s", cr.State, cr.Error))
		}
	}
	return recs
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// connectProblem says why vault.New failed: Vault unreachable, the
// credential refused, or Vault failing.
func connectProblem(file *config.File, addr, credKey, method string, err error) *config.Error {
	var re *api.ResponseError
	switch {
	case errors.As(err, &re) && re.StatusCode >= 400 && re.StatusCode < 500:
		what := "the token (lookup-self)"
		if method != "token" {
			what = "the " + method + " login"
		}
		return file.Problem(credKey, "Vault at %s refused %s with %d (%s): the token is expired, revoked or wrong, or the login's credentials or role are; check it with `vault token lookup` (or the login) against this Vault",
			addr, what, re.StatusCode, oneLine(strings.Join(re.Errors, "; ")))
	case errors.As(err, &re):
		return file.Problem("vault.address", "Vault at %s answered %d (%s): sealed, in standby or failing; check `vault status`", addr, re.StatusCode, oneLine(strings.Join(re.Errors, "; ")))
	case errors.Is(err, context.DeadlineExceeded):
		return file.Problem("vault.address", "Vault at %s did not answer within %s: unreachable (firewall, wrong host or port?)", addr, validateTimeout)
	default:
		return file.Problem("vault.address", "Vault at %s is unreachable: %s", addr, oneLine(err.Error()))
	}
}

// oneLine folds a multi-line error (Vault's "2 errors occurred:\n\t* …")
// into one line, so that each problem is one line of the report.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// nextRuns lists each client's next three runs: from its record's
// rotated_at when the record was read, else from now.
func (v *validation) nextRuns(file *config.File, recs map[string]recordState, now time.Time) {
	for i, cl := range file.Clients {
		sched, err := config.ParseSchedule(cl.Schedule)
		if err != nil {
			continue
		}
		maxAge := cl.MaxAge.D()
		var runs []time.Time
		var note string
		rs, read := recs[cl.Name]
		first, ok := time.Time{}, false
		switch {
		case recs == nil:
			note = "from now: Vault was not read"
		case rs.missing:
			note = "no record yet: bootstrap rotates at the daemon's start, then from there"
			first, ok = now, true
		case !read:
			note = "from now: the record could not be read"
		case rs.rec.Phase == vault.PhaseStaged || rs.rec.Phase == vault.PhaseOverlap:
			note = fmt.Sprintf("a rotation is in flight (%s): from now, the schedule restarts when it completes", rs.rec.Phase)
		default:
			first, ok = rotator.NextDue(sched, maxAge, rs.rec.RotatedAt, now)
			switch {
			case !ok && rs.rec.RotatedAt.IsZero():
				note = "the record has no rotated_at: from the daemon's start"
			case !ok:
				note = "never: the schedule does not fire again"
			case rs.rec.RotatedAt.IsZero():
				note = "the record has no rotated_at and max_age is set: its age is unknown, so it is rotated as soon as a daemon runs"
			case first.Before(now):
				note = fmt.Sprintf("from rotated_at %s: overdue, rotated as soon as a daemon runs", rs.rec.RotatedAt.UTC().Format(time.RFC3339))
			default:
				note = fmt.Sprintf("from rotated_at %s", rs.rec.RotatedAt.UTC().Format(time.RFC3339))
			}
		}
		if !ok && !strings.HasPrefix(note, "never") {
			first, ok = rotator.NextDue(sched, maxAge, now, now)
		}
		for ok && len(runs) < 3 {
			runs = append(runs, first)
			from := first
			if from.Before(now) {
				from = now // an overdue run happens now; the next is scheduled from there
			}
			first, ok = rotator.NextDue(sched, maxAge, from, from)
		}
		list := make([]string, len(runs))
		for i, r := range runs {
			list[i] = r.UTC().Format(time.RFC3339)
		}
		if len(list) == 0 {
			list = []string{"never"}
		}
		if j := cl.Jitter.D(); j > 0 {
			note += "; each plus a random delay of up to " + file.Raw(fmt.Sprintf("clients[%d].jitter", i), cl.Jitter)
		}
		v.runs = append(v.runs, fmt.Sprintf("%s: %s; %s", cl.Name, strings.Join(list, ", "), note))
	}
}
