package cli

import (
	"strings"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

// startCheck is what the daemon, -once and the operator actions check
// before they start, with the same rules and in the same words as
// -validate: the file's lint (no Vault address at all is refused) and every
// environment problem, all reported at once. It returns the exit code
// (ExitOK to go on) and the warnings to log at start.
//
// The schedule checks of the lint (an `@every` under a minute, a grace as
// long as the interval) are only warned about at start: Parse accepts them
// on purpose, so that tests and development can run fast schedules;
// -validate, run before a deployment, refuses them.
func startCheck(file *config.File, f flags, env Env) (int, []*config.Error) {
	var v validation
	errs, warns := file.Lint(env.Getenv)
	for _, e := range errs {
		if e.Key == "vault.address" {
			v.add(faultFile, e)
			continue
		}
		w := *e
		w.Problem += " (-validate refuses this; the daemon runs it, for tests and development)"
		warns = append(warns, &w)
	}
	for _, e := range file.Environment(env.Getenv) {
		if f.client != "" && !concerns(file, e, f.client) {
			continue
		}
		v.add(faultEnv, e)
	}
	if len(v.problems) > 0 {
		v.warnings = warns
		v.clients = len(file.Clients)
		return v.report(env, f.config, ExitUsage), nil
	}
	return ExitOK, warns
}

// concerns reports whether an environment problem e matters to the one
// client named: its own keys, or a shared one it uses (an API key it does
// not override, the Vault credential, the CA, the notifications).
func concerns(file *config.File, e *config.Error, client string) bool {
	if e.Client != "" {
		return e.Client == client
	}
	if !strings.HasPrefix(e.Key, "affix.") {
		return true
	}
	for _, cl := range file.Clients {
		if cl.Name == client {
			return cl.Affix.APIKeyEnv == "" && cl.Affix.APIKeyFile == ""
		}
	}
	return true
}

// logWarnings logs each warning of startCheck at start, in the words of
// -validate.
func logWarnings(log *zap.Logger, warns []*config.Error) {
	for _, w := range warns {
		log.Warn("config warning: "+w.KeyPath(), zap.String("problem", w.Problem), zap.Int("line", w.Line))
	}
}
