package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

// TestLogDurationsAreStrings: durations in the logs read as Go durations
// ("24h0m0s"), in JSON and in the console format, never as bare numbers
// ("grace_period": 86400).
func TestLogDurationsAreStrings(t *testing.T) {
	for _, format := range []string{"json", "console"} {
		var out bytes.Buffer
		log, err := newLogger(config.Log{Level: "info", Format: format}, &out)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("client configured", zap.Duration("grace_period", 24*time.Hour), zap.Duration("retry_in", 1500*time.Millisecond))
		_ = log.Sync()
		for _, want := range []string{`"grace_period":"24h0m0s"`, `"retry_in":"1.5s"`} {
			if format == "console" {
				want = strings.Replace(want, ":", ": ", 1)
			}
			if !strings.Contains(out.String(), want) {
				t.Errorf("%s: %q lacks %s", format, out.String(), want)
			}
		}
	}
}
