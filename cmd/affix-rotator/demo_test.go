package main_test

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/affix-rotator/affix-rotator/internal/vaulttest"
)

// demoEnv returns the environment of a demo run on free ports, with
// overrides.
func demoEnv(t *testing.T, over map[string]string) []string {
	t.Helper()
	env := os.Environ()
	for _, v := range []string{"VAULT_PORT", "AFFIX_PORT", "LISTEN_PORT"} {
		addr, err := vaulttest.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		env = append(env, v+"="+port)
	}
	for k, v := range over {
		env = append(env, k+"="+v)
	}
	return env
}

// runDemo runs scripts/demo.sh and returns its exit code, output and
// duration.
func runDemo(t *testing.T, env []string, limit time.Duration) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command("bash", filepath.Join("..", "..", "scripts", "demo.sh"))
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(limit):
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		t.Fatalf("the demo did not end within %s:\n%s", limit, out.String())
	}
	return cmd.ProcessState.ExitCode(), out.String(), time.Since(start)
}

// TestDemoNamesATakenPort: when a port the demo needs is taken by another
// process, the demo exits 1 within 5 s naming the part, the port and the
// variable that moves it, whether the port answers (another server) or is
// only bound (the part itself fails to start).
func TestDemoNamesATakenPort(t *testing.T) {
	for _, tc := range []struct{ variable, part string }{
		{"AFFIX_PORT", "Affix fake"},
		{"VAULT_PORT", "Vault dev server"},
		{"LISTEN_PORT", "affix-rotator listener"},
	} {
		t.Run(tc.variable, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			_, port, _ := net.SplitHostPort(ln.Addr().String())
			code, out, took := runDemo(t, demoEnv(t, map[string]string{tc.variable: port}), 60*time.Second)
			want := tc.part + " cannot start: 127.0.0.1:" + port + " is already taken by another process; free it or pick another port with " + tc.variable + "=<port>"
			if code != 1 || took > 5*time.Second || !strings.Contains(out, want) {
				t.Fatalf("exit %d after %s, want 1 within 5s and %q:\n%s", code, took, want, out)
			}
		})
	}
}

// TestDemoChecksEachPart: a part that cannot start (its port bound by
// another process that does not answer) stops the demo within 5 s of its
// start, naming it, the port and the variable, with the end of its log.
func TestDemoChecksEachPart(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Vault and builds the demo's binaries")
	}
	// A socket bound without listen: the port is taken, yet nothing answers.
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(sa.(*syscall.SockaddrInet4).Port)
	code, out, _ := runDemo(t, demoEnv(t, map[string]string{"AFFIX_PORT": port}), 5*time.Minute)
	want := "demo: FAILED: the Affix fake could not start on 127.0.0.1:" + port + ": the port is taken or the part failed; free the port or pick another one with AFFIX_PORT=<port>"
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "address already in use") {
		t.Fatalf("exit %d, want 1 and %q with the fake's log:\n%s", code, want, out)
	}
	if strings.Contains(out, "affix-rotator is starting") {
		t.Fatalf("the daemon was started without the fake:\n%s", out)
	}
}

// TestDemoRotates: on free ports the demo completes a rotation, stops by
// itself, and stops the daemon before Vault (no lease left behind, no
// alarming line at the end).
func TestDemoRotates(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo for 15 s")
	}
	code, out, _ := runDemo(t, demoEnv(t, map[string]string{"DEMO_DURATION": "15"}), 5*time.Minute)
	if code != 0 || !strings.Contains(out, "demo: first rotation completed") || !strings.Contains(out, "in-vault-secret-accepted=yes") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	for _, bad := range []string{"LOCKOUT", "could not release", "ERROR", "deprecated"} {
		if strings.Contains(out, bad) {
			t.Fatalf("the demo's output holds %q:\n%s", bad, out)
		}
	}
}
