package k8scheck

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// runbookURL is where every alert's runbook_url points, plus an anchor.
const runbookURL = "https://github.com/affix-rotator/affix-rotator/blob/main/docs/runbook.md"

// anchors returns the GitHub anchors of the Markdown headings in md, with
// their heading text.
func anchors(md string) map[string]string {
	out := map[string]string{}
	seen := map[string]int{}
	inFence := false
	for _, line := range strings.Split(md, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			inFence = !inFence
			continue
		}
		if inFence || !strings.HasPrefix(line, "#") {
			continue
		}
		text := strings.TrimSpace(strings.TrimLeft(line, "#"))
		slug := slugify(text)
		if n := seen[slug]; n > 0 {
			out[fmt.Sprintf("%s-%d", slug, n)] = text
		} else {
			out[slug] = text
		}
		seen[slug]++
	}
	return out
}

// slugify is GitHub's heading anchor: lower case, punctuation but '-' and
// '_' removed, spaces to '-'.
func slugify(heading string) string {
	heading = regexp.MustCompile("`([^`]*)`").ReplaceAllString(heading, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteRune('-')
		}
	}
	return b.String()
}

func TestSlugify(t *testing.T) {
	for in, want := range map[string]string{
		"AffixRotatorDown":                            "affixrotatordown",
		"Exit code 2: bad flags or config":            "exit-code-2-bad-flags-or-config",
		"End a grace period early (`vault kv patch`)": "end-a-grace-period-early-vault-kv-patch",
		"Reading `/status`":                           "reading-status",
	} {
		if got := slugify(in); got != want {
			t.Errorf("slugify(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRunbookCoversAlerts checks that every alert's runbook_url is the
// runbook with an anchor that exists, named after the alert.
func TestRunbookCoversAlerts(t *testing.T) {
	a := anchors(string(readRepoFile(t, "docs", "runbook.md")))
	n := 0
	for _, g := range loadAlerts(t).Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			url := r.Annotations["runbook_url"]
			base, anchor, ok := strings.Cut(url, "#")
			switch {
			case !ok || base != runbookURL:
				t.Errorf("%s: runbook_url %q, want %s#<anchor>", r.Alert, url, runbookURL)
			case anchor != strings.ToLower(r.Alert):
				t.Errorf("%s: runbook anchor #%s, want #%s (a section named after the alert)", r.Alert, anchor, strings.ToLower(r.Alert))
			case a[anchor] == "":
				t.Errorf("%s: docs/runbook.md has no section #%s", r.Alert, anchor)
			}
			for _, k := range []string{"summary", "description"} {
				if r.Annotations[k] == "" {
					t.Errorf("%s: no %s annotation", r.Alert, k)
				}
			}
			if r.Labels["severity"] == "" {
				t.Errorf("%s: no severity label", r.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alert in alerts.yaml")
	}
}

// TestRunbookCoversExitCodesAndProcedures checks the runbook's sections
// that operators are sent to from elsewhere (the daemon's messages, the
// README, the chart's notes).
func TestRunbookCoversExitCodesAndProcedures(t *testing.T) {
	a := anchors(string(readRepoFile(t, "docs", "runbook.md")))
	prefixes := []string{
		"exit-code-0", "exit-code-1", "exit-code-2",
		"seed-a-client", "bootstrap-a-brand-new-affix-client",
		"end-a-grace-period-early", "recover-a-client-stuck-in-staged",
		"read-status", "a-malformed-record",
	}
	for _, p := range prefixes {
		found := false
		for anchor := range a {
			if strings.HasPrefix(anchor, p) {
				found = true
			}
		}
		if !found {
			t.Errorf("docs/runbook.md has no section whose anchor starts with #%s", p)
		}
	}
}

// TestRunbookMetricNames checks that every affix_rotator_ metric the
// runbook names is one the daemon exports.
func TestRunbookMetricNames(t *testing.T) {
	e := daemonMetrics(t)
	md := string(readRepoFile(t, "docs", "runbook.md"))
	for _, name := range regexp.MustCompile(`affix_rotator_[a-z_]+[a-z]`).FindAllString(md, -1) {
		if _, ok := e.family(name); !ok {
			t.Errorf("docs/runbook.md names %s, which the daemon does not export", name)
		}
	}
}
