// Package cli is the affix-rotator command: it parses flags, loads the
// checked config, wires Vault, Affix, the rotator, metrics and the HTTP
// listener together, and maps the outcome to an exit code (0 success,
// 1 rotation failed, 2 bad flags or config).
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/version"
)

// Exit codes (docs/design.md).
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2
)

// Env is the process environment the command runs in.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// Hangup receives a value on each SIGHUP: the daemon reloads its
	// config (the other modes ignore it). Nil: never.
	Hangup <-chan os.Signal
}

type flags struct {
	config       string
	once         bool
	client       string
	validate     bool
	offline      bool
	version      bool
	retryTimeout time.Duration
	st           statusOptions

	// Operator actions (actions.go).
	grace            time.Duration
	endGrace         bool
	extendGrace      time.Duration
	reacceptPrevious time.Duration
	reason           string
}

// Main runs the command with args (without the program name) and returns
// the exit code. ctx ends on SIGINT/SIGTERM.
//
// args are either a subcommand (run, once, status, validate, end-grace,
// extend-grace, reaccept-previous, version, completion; commands.go) or,
// deprecated, the flat flag form of earlier versions (-config c.yaml
// -once …), which keeps working and prints a one-line notice on stderr with
// the subcommand to use instead.
func Main(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = os.Getenv
	}
	if !legacyForm(args) {
		return runCommand(ctx, args, env)
	}
	return legacyMain(ctx, args, env)
}

// legacyMain parses the flat flag form and runs it.
func legacyMain(ctx context.Context, args []string, env Env) int {
	var f flags
	fs := flag.NewFlagSet("affix-rotator", flag.ContinueOnError)
	fs.SetOutput(env.Stderr)
	fs.StringVar(&f.config, "config", "", "path of the YAML config (required)")
	fs.BoolVar(&f.once, "once", false, "rotate now, wait the grace period, drop the old secret, and exit (resumes a rotation in flight)")
	fs.StringVar(&f.client, "client", "", "with -once or -status: only this client (default: all)")
	fs.BoolVar(&f.validate, "validate", false, "check the config and exit")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.DurationVar(&f.retryTimeout, "retry-timeout", 15*time.Minute, "with -once or an incident command: give up when Vault or one step has failed for this long (the rotation stays resumable); 0 retries for ever. Default 15m for -once, "+incidentRetryTimeout.String()+" for the incident commands (-end-grace, -extend-grace, -reaccept-previous, -once -grace)")
	fs.DurationVar(&f.grace, "grace", 0, "with -once: the grace period of this rotation only, shorter than the configured one when the current secret leaked")
	fs.BoolVar(&f.endGrace, "end-grace", false, "with -client, in overlap: drop the previous secret now (it leaked)")
	fs.DurationVar(&f.extendGrace, "extend-grace", 0, "with -client, in overlap: keep both secrets accepted this much longer")
	fs.DurationVar(&f.reacceptPrevious, "reaccept-previous", 0, "with -client, after a completed rotation: make Affix accept the previous secret again for this long")
	fs.StringVar(&f.reason, "reason", "", "why (an operator action's audit line and the record's last_action); required by -end-grace, -extend-grace, -reaccept-previous and -once -grace")
	registerStatusFlags(fs, &f.st)
	registerValidateFlags(fs, &f)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(env.Stderr, "affix-rotator: unexpected argument %q\n", fs.Arg(0))
		return ExitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	fmt.Fprintln(env.Stderr, deprecationNotice(f, set))
	return execute(ctx, f, set, env)
}

// execute checks the flags (set: those given) and runs what they ask for.
func execute(ctx context.Context, f flags, set map[string]bool, env Env) int {
	if f.version {
		fmt.Fprintf(env.Stdout, "affix-rotator %s (%s)\n", version.Version, version.GoVersion())
		return ExitOK
	}
	if f.config == "" {
		fmt.Fprintln(env.Stderr, "affix-rotator: -config is required")
		return ExitUsage
	}
	if msg := f.checkAction(set); msg != "" {
		fmt.Fprintln(env.Stderr, "affix-rotator: "+msg)
		return ExitUsage
	}
	if f.incident() && !set["retry-timeout"] {
		f.retryTimeout = incidentRetryTimeout
	}
	if f.client != "" && !f.once && !f.st.status && f.action() == "" {
		fmt.Fprintln(env.Stderr, "affix-rotator: -client is only meaningful with -once, -status or an operator action")
		return ExitUsage
	}
	if err := checkStatusFlags(f); err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: %v\n", err)
		return ExitUsage
	}
	if f.validate && f.once {
		fmt.Fprintln(env.Stderr, "affix-rotator: -validate and -once are exclusive")
		return ExitUsage
	}
	if f.offline && !f.validate {
		fmt.Fprintln(env.Stderr, "affix-rotator: -offline is only meaningful with -validate")
		return ExitUsage
	}
	if f.validate {
		return runValidate(ctx, f, env)
	}
	file, err := config.LoadFile(f.config)
	if err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid config %s:\n%v\n", f.config, err)
		return ExitUsage
	}
	cfg := file.Config
	if _, err := cfg.VaultAddr(env.Getenv); err != nil {
		fmt.Fprintf(env.Stderr, "affix-rotator: invalid environment for %s:\n%v\n", f.config, err)
		return ExitUsage
	}
	if f.client != "" && !hasClient(cfg, f.client) {
		fmt.Fprintf(env.Stderr, "affix-rotator: -client: no client named %q in %s\n", f.client, f.config)
		return ExitUsage
	}
	if f.st.status {
		return runStatus(ctx, cfg, f, env)
	}
	code, warnings := startCheck(file, f, env)
	if code != ExitOK {
		return code
	}
	return run(ctx, cfg, f, env, warnings)
}

func hasClient(cfg *config.Config, name string) bool {
	for _, c := range cfg.Clients {
		if c.Name == name {
			return true
		}
	}
	return false
}
