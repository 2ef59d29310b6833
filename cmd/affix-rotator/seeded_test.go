package main_test

import (
	"syscall"
	"testing"
	"time"
)

// TestSeededRecordRotatesAcrossRestarts: a record seeded by hand (no
// rotated_at), `@every 1m`, and a daemon restarted every 40 s, as a
// crash-looping pod would be: the first rotation comes within 3 minutes of
// the seeding, because the schedule counts from when the record was seeded
// (Vault's created_time of its version, then seeded_at), not from each
// start. (On bf7ad79 every start re-anchored the schedule, so a daemon
// restarted more often than its schedule never rotated the record.)
func TestSeededRecordRotatesAcrossRestarts(t *testing.T) {
	s := newStack(t) // seeds the record now, with no rotated_at
	seeded := time.Now()
	cfg := s.config("c.yaml", "pod-a", "    schedule: \"@every 1m\"\n    grace_period: 1s\n")
	rotated := func() bool { return str(s.record(), "rotated_at") != "" }
	starts := 0
	for !rotated() && time.Since(seeded) < 3*time.Minute {
		starts++
		d := s.start("-config", cfg)
		// The restart cadence is the scenario: 40 s of life, or until the
		// rotation is recorded.
		for until := time.Now().Add(40 * time.Second); time.Now().Before(until) && !rotated(); {
			time.Sleep(250 * time.Millisecond)
		}
		if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if code := d.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("daemon exit %d on SIGTERM\n%s", code, d.out.String())
		}
	}
	if !rotated() {
		t.Fatalf("a seeded record with @every 1m and a daemon restarted every 40s: no rotation %s after seeding (%d starts)", time.Since(seeded).Round(time.Second), starts)
	}
	t.Logf("seeded record rotated %s after seeding, daemon started %d times", time.Since(seeded).Round(time.Second), starts)
}
