package cli

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

// The command line is one subcommand per task, built on spf13/cobra: the
// library kubectl, helm and cmctl use (each subcommand with its own -h and
// examples, shell completion generated from the same definitions), well
// kept and already the convention on-call engineers know. Every subcommand
// fills the same flags as the deprecated flat form and runs the same code
// (execute), so both forms behave alike and print the same messages.

// legacyForm reports whether args are the deprecated flat form (they start
// with a flag other than help).
func legacyForm(args []string) bool {
	if len(args) == 0 || !strings.HasPrefix(args[0], "-") {
		return false
	}
	switch args[0] {
	case "-h", "-help", "--help":
		return false
	}
	return true
}

// deprecationNotice is the one line the flat form prints on stderr: the
// subcommand that does the same.
func deprecationNotice(f flags, set map[string]bool) string {
	var c []string
	add := func(flag, v string) {
		if set[flag] {
			c = append(c, "--"+flag, shellQuote(v))
		}
	}
	switch {
	case f.version:
		c = []string{"version"}
	case f.validate:
		c = []string{"validate"}
		add("config", f.config)
		if f.offline {
			c = append(c, "--offline")
		}
	case f.st.status:
		c = []string{"status"}
		add("config", f.config)
		add("client", f.client)
		if set["o"] {
			c = append(c, "-o", f.st.output)
		}
	case f.endGrace, set["extend-grace"], set["reaccept-previous"]:
		switch {
		case f.endGrace:
			c = []string{"end-grace"}
		case set["extend-grace"]:
			c = []string{"extend-grace", f.extendGrace.String()}
		default:
			c = []string{"reaccept-previous", f.reacceptPrevious.String()}
		}
		add("config", f.config)
		add("client", f.client)
		add("reason", f.reason)
		add("retry-timeout", f.retryTimeout.String())
	case f.once:
		c = []string{"once"}
		add("config", f.config)
		add("client", f.client)
		add("grace", f.grace.String())
		add("reason", f.reason)
		add("retry-timeout", f.retryTimeout.String())
	default:
		c = []string{"run"}
		add("config", f.config)
	}
	return "affix-rotator: the flat flag form is deprecated and will be removed; use: affix-rotator " + strings.Join(c, " ") + " (affix-rotator -h lists the commands)"
}

// plainWord is a shell word that needs no quotes.
var plainWord = regexp.MustCompile(`^[A-Za-z0-9_./:=@%+,-]+$`)

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if plainWord.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// longFlags are the flags a subcommand also takes with one dash
// (-config, as in the flat form and Go's flag package).
var longFlags = map[string]bool{"config": true, "client": true, "reason": true, "grace": true, "retry-timeout": true, "offline": true, "output": true, "help": true}

// normalize turns -config into --config (and -config=x into --config=x)
// for the long flags, so that the one-dash habit of the flat form works
// with the subcommands too.
func normalize(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = a
		if strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(a) > 2 {
			name, _, _ := strings.Cut(a[1:], "=")
			if longFlags[name] {
				out[i] = "-" + a
			}
		}
	}
	return out
}

// newFlags returns the flags' defaults, as the flat form has them.
func newFlags() flags {
	return flags{st: statusOptions{output: "table"}, retryTimeout: 15 * time.Minute}
}

// runCommand runs the subcommand form.
func runCommand(ctx context.Context, args []string, env Env) int {
	code := ExitOK
	root := newRootCommand(env, &code)
	root.SetArgs(normalize(args))
	if err := root.ExecuteContext(ctx); err != nil {
		name := "affix-rotator"
		if c, _, ferr := root.Find(args); ferr == nil && c != root {
			name = c.CommandPath()
		}
		fmt.Fprintf(env.Stderr, "affix-rotator: %v\nRun '%s -h' for usage.\n", err, name)
		return ExitUsage
	}
	return code
}

// newRootCommand builds the command tree; a subcommand stores its exit
// code in code.
func newRootCommand(env Env, code *int) *cobra.Command {
	root := &cobra.Command{
		Use:   "affix-rotator",
		Short: "Keep the OAuth client_secret of Affix API clients rotated, with the secrets in HashiCorp Vault",
		Long: `affix-rotator keeps the OAuth client_secret of Affix API clients rotated with
zero downtime, the secrets in HashiCorp Vault (KV v2). One command per task;
each has its own -h with examples. Exit codes: 0 done, 1 failed (or
interrupted; the rotation stays resumable), 2 bad flags, config or
environment.

The flat flag form of earlier versions (affix-rotator -config c.yaml -once)
still works and prints the command to use instead.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_ = cmd.Help()
			*code = ExitUsage
			return nil
		},
	}
	root.SetOut(env.Stdout)
	root.SetErr(env.Stderr)
	root.CompletionOptions.HiddenDefaultCmd = false

	// run executes the flags a subcommand filled, the flags given being
	// those cobra saw changed (under the flat form's names).
	run := func(f *flags, extra ...string) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			set := map[string]bool{}
			cmd.Flags().Visit(func(fl *pflag.Flag) { set[fl.Name] = true })
			for _, e := range extra {
				set[e] = true
			}
			*code = execute(cmd.Context(), *f, set, env)
			return nil
		}
	}
	configFlag := func(c *cobra.Command, f *flags) {
		c.Flags().StringVar(&f.config, "config", "", "path of the YAML config (required)")
		_ = c.MarkFlagFilename("config", "yaml", "yml")
	}
	clientFlag := func(c *cobra.Command, f *flags, what string) {
		c.Flags().StringVar(&f.client, "client", "", what)
		// Completion offers the clients of the --config given.
		_ = c.RegisterFlagCompletionFunc("client", func(cmd *cobra.Command, _ []string, _ string) ([]string, cobra.ShellCompDirective) {
			file, _ := config.LoadFile(f.config) // a file with problems still names its clients
			if file == nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			names := make([]string, 0, len(file.Clients))
			for _, cl := range file.Clients {
				names = append(names, cl.Name)
			}
			return names, cobra.ShellCompDirectiveNoFileComp
		})
	}
	reasonFlag := func(c *cobra.Command, f *flags) {
		c.Flags().StringVar(&f.reason, "reason", "", "why (required): the audit log line and the record's last_action")
	}
	retryFlag := func(c *cobra.Command, f *flags, def time.Duration) {
		c.Flags().DurationVar(&f.retryTimeout, "retry-timeout", def, "give up when Vault or one step has failed for this long (the rotation stays resumable); 0 retries for ever")
	}

	{ // run
		f := newFlags()
		c := &cobra.Command{
			Use:   "run",
			Short: "Run the daemon: rotate every client on its schedule, serve /metrics and /status",
			Long: `Run the daemon: every client is rotated on its schedule, a rotation in
flight is resumed, /metrics, /status, /healthz and /readyz are served on
listen. It refuses to start (exit 2) what validate refuses in the file's
Vault address and in the environment, and reloads the config on SIGHUP.
SIGINT/SIGTERM stop it cleanly (exit 0).`,
			Example: `  affix-rotator run --config /etc/affix-rotator/config.yaml`,
			Args:    cobra.NoArgs,
			RunE:    run(&f),
		}
		configFlag(c, &f)
		root.AddCommand(c)
	}
	{ // once
		f := newFlags()
		f.once = true
		c := &cobra.Command{
			Use:   "once",
			Short: "Rotate now, wait the grace period, drop the old secret, and exit",
			Long: `Rotate now (or resume the rotation in flight), wait the grace period, tell
Affix to drop the old secret, and exit 0. Safe while the daemon runs. It
prints a progress line at most once a minute during the grace, plus every
change of phase and every retry (each saying when it gives up).

With --grace (the current secret leaked) it is an incident command: it
needs --client and --reason, and gives up after 1m by default.`,
			Example: `  affix-rotator once --config /etc/affix-rotator/config.yaml --client prod
  # the current secret leaked: rotate now with a short grace
  affix-rotator once --config /etc/affix-rotator/config.yaml --client prod --grace 5m --reason "INC-123: current secret leaked"`,
			Args: cobra.NoArgs,
			RunE: run(&f, "once"),
		}
		configFlag(c, &f)
		clientFlag(c, &f, "only this client (default: all); required with --grace")
		c.Flags().DurationVar(&f.grace, "grace", 0, "the grace period of this rotation only, shorter than the configured one (the current secret leaked)")
		reasonFlag(c, &f)
		c.Flags().Lookup("reason").Usage = "why (required with --grace): the audit log line and the record's last_action"
		retryFlag(c, &f, 15*time.Minute)
		c.Flags().Lookup("retry-timeout").Usage += " (default 15m, 1m with --grace)"
		root.AddCommand(c)
	}
	{ // status
		f := newFlags()
		f.st.status = true
		c := &cobra.Command{
			Use:   "status",
			Short: "Show every client's record from Vault (never a secret)",
			Long: `Show every client's record (or --client's) from Vault: phase, rotation, next
run, grace left, lease, last error, last action. Never a secret. No daemon
needed. Exit 1 if a record cannot be read.`,
			Example: `  affix-rotator status --config /etc/affix-rotator/config.yaml
  affix-rotator status --config /etc/affix-rotator/config.yaml --client prod -o json`,
			Args: cobra.NoArgs,
			RunE: run(&f),
		}
		configFlag(c, &f)
		clientFlag(c, &f, "only this client (default: all)")
		c.Flags().StringVarP(&f.st.output, "output", "o", "table", "output format: table or json")
		root.AddCommand(c)
	}
	{ // validate
		f := newFlags()
		f.validate = true
		c := &cobra.Command{
			Use:   "validate",
			Short: "Check the config, the environment and Vault, and exit",
			Long: `Check the file, the environment (every variable and file the config names)
and Vault (reachable, the token valid, its capabilities on each record, each
record present), reporting every problem at once. It never calls Affix and
says so. Exit 0 when nothing is wrong, 2 when the file or the environment
is, 1 when only Vault is. --offline checks the file alone and needs no
secret (CI, the systemd unit's ExecStartPre).`,
			Example: `  affix-rotator validate --config /etc/affix-rotator/config.yaml
  affix-rotator validate --config config.yaml --offline`,
			Args: cobra.NoArgs,
			RunE: run(&f, "validate"),
		}
		configFlag(c, &f)
		c.Flags().BoolVar(&f.offline, "offline", false, "check the file only (not the environment, not Vault)")
		root.AddCommand(c)
	}
	{ // end-grace
		f := newFlags()
		f.endGrace = true
		c := &cobra.Command{
			Use:   "end-grace",
			Short: "Incident: drop the previous secret now (it leaked); the record must be in overlap",
			Long: `Drop the previous secret now: the record's grace ends, Affix is told to accept
the current secret only, the record becomes stable. For when the previous
secret leaked and every consumer already uses the current one. Safe while
the daemon runs; audited (who, --reason). Gives up after --retry-timeout
(1m) when Vault or Affix is down; nothing is left half-done.`,
			Example: `  affix-rotator end-grace --config /etc/affix-rotator/config.yaml --client prod --reason "INC-123: previous secret leaked"`,
			Args:    cobra.NoArgs,
			RunE:    run(&f, "end-grace"),
		}
		configFlag(c, &f)
		clientFlag(c, &f, "the client (required)")
		reasonFlag(c, &f)
		retryFlag(c, &f, incidentRetryTimeout)
		root.AddCommand(c)
	}
	durationCommand := func(name, short, long, example string, target func(*flags) *time.Duration) {
		f := newFlags()
		c := &cobra.Command{
			Use:     name + " DURATION",
			Short:   short,
			Long:    long,
			Example: example,
			Args: func(_ *cobra.Command, args []string) error {
				if len(args) != 1 {
					return fmt.Errorf("%s takes one DURATION (e.g. %s 6h), got %d arguments", name, name, len(args))
				}
				return nil
			},
			RunE: func(cmd *cobra.Command, args []string) error {
				d, err := time.ParseDuration(args[0])
				if err != nil {
					return fmt.Errorf("%s: %q is not a duration (e.g. 6h, 90m)", name, args[0])
				}
				*target(&f) = d
				return run(&f, name)(cmd, args)
			},
		}
		configFlag(c, &f)
		clientFlag(c, &f, "the client (required)")
		reasonFlag(c, &f)
		retryFlag(c, &f, incidentRetryTimeout)
		root.AddCommand(c)
	}
	durationCommand("extend-grace", "Incident: keep both secrets accepted DURATION longer; the record must be in overlap",
		`Move the grace's end DURATION later (from now, if it has passed): both secrets
stay accepted, for consumers that are slow to pick the new one up. Safe
while the daemon runs; audited (who, --reason). Gives up after
--retry-timeout (1m) when Vault is down.`,
		`  affix-rotator extend-grace 6h --config /etc/affix-rotator/config.yaml --client prod --reason "consumers restart tonight"`,
		func(f *flags) *time.Duration { return &f.extendGrace })
	durationCommand("reaccept-previous", "Incident: make Affix accept the previous secret again for DURATION (an app broke)",
		`After a completed rotation, make Affix accept the previous secret again for
DURATION (it is taken from the record's KV history); the record is back in
overlap and a running daemon drops the previous secret when that grace
ends. Safe while the daemon runs; audited (who, --reason). Gives up after
--retry-timeout (1m) when Vault or Affix is down.`,
		`  affix-rotator reaccept-previous 2h --config /etc/affix-rotator/config.yaml --client prod --reason "INC-124: billing app broke"`,
		func(f *flags) *time.Duration { return &f.reacceptPrevious })
	{ // version
		c := &cobra.Command{
			Use:     "version",
			Short:   "Print the version and exit",
			Example: `  affix-rotator version`,
			Args:    cobra.NoArgs,
			RunE:    run(&flags{version: true, st: statusOptions{output: "table"}}),
		}
		root.AddCommand(c)
	}
	return root
}
