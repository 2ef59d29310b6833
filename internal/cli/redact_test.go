package cli

import (
	"bytes"
	"encoding/base64"
	"errors"
	"html"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/affix-rotator/affix-rotator/internal/config"
	"github.com/affix-rotator/affix-rotator/internal/redact"
)

// TestLogsAreRedacted: the daemon's logger, built as run builds it, writes
// no form of an API key read from the environment, whatever a logged error
// echoes; JSON and console formats.
func TestLogsAreRedacted(t *testing.T) {
	const key = "AFX+key/with=signs&<tags>"
	for _, format := range []string{"json", "console"} {
		var out bytes.Buffer
		secrets := &redact.Set{Min: minRedacted}
		log, err := newLogger(config.Log{Level: "debug", Format: format}, redact.Writer{W: &out, Set: secrets})
		if err != nil {
			t.Fatal(err)
		}
		addAPIKeys(secrets, parse(t, notifyBase), func(k string) string { return map[string]string{"AFFIX_API_KEY": key}[k] })
		forms := []string{key, url.QueryEscape(key), url.PathEscape(key), html.EscapeString(key), base64.StdEncoding.EncodeToString([]byte(key))}
		for _, f := range forms {
			log.Error("affix said", zap.Error(errors.New("WAF: "+f)), zap.String("raw", f))
		}
		for _, f := range append(forms, `AFX+key/with=signs\u0026\u003ctags\u003e`) {
			if strings.Contains(out.String(), f) {
				t.Errorf("%s log holds %q:\n%s", format, f, out.String())
			}
		}
		if strings.Count(out.String(), "[REDACTED]") < 2*len(forms) {
			t.Errorf("%s: not every form redacted:\n%s", format, out.String())
		}
	}
}
