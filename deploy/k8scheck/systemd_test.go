package k8scheck

import (
	"strings"
	"testing"
)

// unit parses a systemd unit file: section -> key -> values (a key may be
// given more than once).
func unit(t *testing.T, text string) map[string]map[string][]string {
	t.Helper()
	out := map[string]map[string][]string{}
	section := ""
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = strings.Trim(line, "[]")
			out[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("unit line %d: %q is not key=value in a section", i+1, line)
			}
			out[section][k] = append(out[section][k], v)
		}
	}
	return out
}

// TestSystemdUnit checks that deploy/systemd/affix-rotator.service has the
// hardening and restart policy it promises (systemd-analyze verify, run by
// deploy/check.sh, checks the syntax; this checks the content).
func TestSystemdUnit(t *testing.T) {
	u := unit(t, string(readRepoFile(t, "deploy", "systemd", "affix-rotator.service")))
	svc := u["Service"]
	if svc == nil {
		t.Fatal("no [Service] section")
	}
	want := map[string]string{
		"Type":                     "exec",
		"EnvironmentFile":          "/etc/affix-rotator/env",
		"ExecStartPre":             "/usr/local/bin/affix-rotator validate --offline --config /etc/affix-rotator/config.yaml",
		"ExecStart":                "/usr/local/bin/affix-rotator run --config /etc/affix-rotator/config.yaml",
		"Restart":                  "on-failure",
		"RestartPreventExitStatus": "2",
		"DynamicUser":              "yes",
		"UMask":                    "0077",
		"ProtectSystem":            "strict",
		"ProtectHome":              "yes",
		"PrivateTmp":               "yes",
		"PrivateDevices":           "yes",
		"NoNewPrivileges":          "yes",
		"RestrictSUIDSGID":         "yes",
		"LockPersonality":          "yes",
		"MemoryDenyWriteExecute":   "yes",
		"RestrictRealtime":         "yes",
		"RestrictNamespaces":       "yes",
		"ProtectKernelTunables":    "yes",
		"ProtectKernelModules":     "yes",
		"ProtectKernelLogs":        "yes",
		"ProtectControlGroups":     "yes",
		"ProtectClock":             "yes",
		"ProtectHostname":          "yes",
		"RestrictAddressFamilies":  "AF_INET AF_INET6 AF_UNIX",
		"SystemCallFilter":         "@system-service",
		"SystemCallArchitectures":  "native",
	}
	for k, v := range want {
		if got := svc[k]; len(got) == 0 || got[0] != v {
			t.Errorf("%s=%v, want %s=%s", k, got, k, v)
		}
	}
	// Cleared on purpose: no capability at all.
	for _, k := range []string{"CapabilityBoundingSet", "AmbientCapabilities"} {
		if got := svc[k]; len(got) != 1 || got[0] != "" {
			t.Errorf("%s=%v, want it present and empty", k, got)
		}
	}
	if got := svc["SystemCallFilter"]; len(got) < 2 || !strings.HasPrefix(got[1], "~") {
		t.Errorf("SystemCallFilter %v: want @system-service, then a deny list (~@privileged …)", got)
	}
	for _, e := range svc["Environment"] {
		if u := strings.ToUpper(e); strings.Contains(u, "KEY") || strings.Contains(u, "TOKEN") || strings.Contains(u, "SECRET") {
			t.Errorf("Environment=%s: secrets belong in the 0600 EnvironmentFile, not in the unit", e)
		}
	}
	unitSec := u["Unit"]
	if unitSec == nil || unitSec["StartLimitBurst"] == nil || unitSec["StartLimitIntervalSec"] == nil {
		t.Error("[Unit] needs StartLimitIntervalSec and StartLimitBurst: RestartPreventExitStatus does not cover ExecStartPre")
	}
	if u["Install"] == nil || u["Install"]["WantedBy"] == nil || u["Install"]["WantedBy"][0] != "multi-user.target" {
		t.Error("[Install] WantedBy=multi-user.target is missing")
	}
}
