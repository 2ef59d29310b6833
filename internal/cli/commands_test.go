package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSubcommandHelp: one subcommand per task, each with its own -h and
// examples; the root help lists them all, completion included.
func TestSubcommandHelp(t *testing.T) {
	var root bytes.Buffer
	if code := Main(context.Background(), []string{"-h"}, Env{Stdout: &root, Stderr: &root}); code != ExitOK {
		t.Fatalf("-h: exit %d", code)
	}
	for _, name := range []string{"run", "once", "status", "validate", "end-grace", "extend-grace", "reaccept-previous", "version", "completion"} {
		if !strings.Contains(root.String(), "\n  "+name+" ") {
			t.Errorf("-h does not list %s:\n%s", name, root.String())
		}
		if name == "completion" {
			continue
		}
		var out bytes.Buffer
		if code := Main(context.Background(), []string{name, "-h"}, Env{Stdout: &out, Stderr: &out}); code != ExitOK {
			t.Errorf("%s -h: exit %d", name, code)
		}
		if !strings.Contains(out.String(), "Usage:\n  affix-rotator "+name) || !strings.Contains(out.String(), "Examples:\n  affix-rotator "+name) {
			t.Errorf("%s -h lacks its usage or examples:\n%s", name, out.String())
		}
	}
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"completion", "bash"}, Env{Stdout: &out, Stderr: &out}); code != ExitOK || !strings.Contains(out.String(), "bash completion") {
		t.Fatalf("completion bash: exit %d:\n%.300s", code, out.String())
	}
	// --client completes to the config's clients.
	path := filepath.Join(t.TempDir(), "c.yaml")
	y := "clients:\n  - {name: prod, vault_path: affix/prod, schedule: \"@daily\", grace_period: 1h}\n  - {name: staging, vault_path: affix/staging, schedule: \"@daily\", grace_period: 1h}\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	Main(context.Background(), []string{"__complete", "end-grace", "--config", path, "--client", ""}, Env{Stdout: &out, Stderr: &out})
	if !strings.Contains(out.String(), "prod\nstaging\n") {
		t.Fatalf("--client completion: %q", out.String())
	}
}

// TestFlatFormStillWorks: the flat flag form of earlier versions runs the
// same code with the same result, and prints one line on stderr naming the
// subcommand to use instead; the subcommands take one-dash long flags too.
func TestFlatFormStillWorks(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	y := "vault: {address: \"http://127.0.0.1:1\"}\nclients:\n  - name: prod\n    vault_path: affix/prod\n    schedule: \"@every 720h\"\n    grace_period: 24h\n"
	if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		flat, sub []string
		notice    string
		code      int
	}{
		{[]string{"-config", path, "-validate", "-offline"}, []string{"validate", "--config", path, "--offline"}, "use: affix-rotator validate --config " + path + " --offline", 0},
		{[]string{"-config", path, "-validate", "-offline"}, []string{"validate", "-config", path, "-offline"}, "", 0},
		{[]string{"-version"}, []string{"version"}, "use: affix-rotator version", 0},
		{[]string{"-config", path, "-end-grace", "-client", "prod"}, []string{"end-grace", "--config", path, "--client", "prod"}, "use: affix-rotator end-grace --config " + path + " --client prod", 2},
		{[]string{"-config", path, "-extend-grace", "0s", "-client", "prod", "-reason", "slow consumers"}, []string{"extend-grace", "0s", "--config", path, "--client", "prod", "--reason", "slow consumers"},
			"use: affix-rotator extend-grace 0s --config " + path + " --client prod --reason 'slow consumers'", 2},
		{[]string{"-config", path, "-once", "-client", "prod", "-grace", "1m"}, []string{"once", "--config", path, "--client", "prod", "--grace", "1m"}, "use: affix-rotator once --config " + path + " --client prod --grace 1m0s", 2},
		{[]string{"-config", path, "-status", "-o", "xml"}, []string{"status", "--config", path, "-o", "xml"}, "use: affix-rotator status --config " + path + " -o xml", 2},
	} {
		var flat, sub bytes.Buffer
		fc := Main(context.Background(), tc.flat, Env{Stdout: &flat, Stderr: &flat, Getenv: func(string) string { return "" }})
		sc := Main(context.Background(), tc.sub, Env{Stdout: &sub, Stderr: &sub, Getenv: func(string) string { return "" }})
		if fc != tc.code || sc != tc.code {
			t.Errorf("%v: exit %d, %v: exit %d; want %d", tc.flat, fc, tc.sub, sc, tc.code)
		}
		first, rest, _ := strings.Cut(flat.String(), "\n")
		if !strings.HasPrefix(first, "affix-rotator: the flat flag form is deprecated") || !strings.Contains(first, tc.notice) {
			t.Errorf("%v: the first line is not the notice naming %q: %q", tc.flat, tc.notice, first)
		}
		if strings.Contains(sub.String(), "deprecated") {
			t.Errorf("%v prints the deprecation notice", tc.sub)
		}
		// The same output otherwise (the next runs are computed from now).
		if strip(rest) != strip(sub.String()) {
			t.Errorf("%v and %v differ:\n%s\n---\n%s", tc.flat, tc.sub, rest, sub.String())
		}
	}
	var out bytes.Buffer
	if code := Main(context.Background(), []string{"extend-grace", "--config", path, "--client", "prod"}, Env{Stdout: &out, Stderr: &out}); code != ExitUsage || !strings.Contains(out.String(), "extend-grace takes one DURATION") {
		t.Fatalf("extend-grace without its duration: exit %d: %s", code, out.String())
	}
}

// strip drops the lines that hold times (next runs).
func strip(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if !strings.HasPrefix(l, "  prod: ") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
