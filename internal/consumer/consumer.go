// Package consumer is an application that uses an Affix client's
// credentials as a real one does, reduced to what the zero-downtime promise
// is about: at a fixed interval it re-reads the client id and secret that
// Vault Agent (or any tool) keeps in files, and authenticates with them
// against the Affix fake's consumer stand-in (affixtest.TokenPath), counting
// what is accepted and refused and noting when it first held each secret.
// History reads, from the record's KV v2 versions, when each secret became
// current in Vault, so that a test or the bench can say how late the
// consumer picked it up. Tests and the bench use it; secrets appear only as
// affixtest.Fingerprint values.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/affix-rotator/affix-rotator/affix/affixtest"
)

// Config configures a Consumer.
type Config struct {
	// SecretFile holds the client secret (a trailing newline is ignored).
	SecretFile string
	// ClientIDFile holds the client id; when empty, ClientID is used.
	ClientIDFile string
	// ClientID is the client id when there is no ClientIDFile, or while
	// that file is empty (a record seeded without client_id).
	ClientID string
	// TokenURL is the fake's consumer stand-in: its base URL + affixtest.TokenPath.
	TokenURL string
	// Interval between two authentications. Default 50ms.
	Interval time.Duration
	// Clock paces the loop and stamps what is seen. Default: the real clock.
	Clock clockwork.Clock
	// HTTP is the client used. Default: one with a 5s timeout.
	HTTP *http.Client
}

// Stats counts a consumer's authentications.
type Stats struct {
	// Attempts is the number of authentications tried.
	Attempts int
	// Accepted is the number of 200s.
	Accepted int
	// Refused is the number of 401s: the secret held was not accepted.
	Refused int
	// Errors is the number of attempts that got no decision: a file that
	// could not be read or was empty, a transport error, another status.
	Errors int
	// FirstRefused and LastRefused bound the refusals (zero when none).
	FirstRefused, LastRefused time.Time
	// LastError describes the last error, without any secret.
	LastError string
}

// Failed is the number of attempts that did not authenticate: refusals
// and errors.
func (s Stats) Failed() int { return s.Refused + s.Errors }

// Consumer authenticates repeatedly with the credentials in its files. Its
// methods are safe for concurrent use.
type Consumer struct {
	cfg Config

	mu        sync.Mutex
	stats     Stats
	firstSeen map[string]time.Time // fingerprint -> when the file first held it
}

// New returns a Consumer; Run starts it.
func New(cfg Config) *Consumer {
	if cfg.Interval <= 0 {
		cfg.Interval = 50 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 5 * time.Second}
	}
	return &Consumer{cfg: cfg, firstSeen: map[string]time.Time{}}
}

// Run authenticates once, then once per Interval, until ctx ends; it
// returns nil then.
func (c *Consumer) Run(ctx context.Context) error {
	tick := c.cfg.Clock.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	for {
		c.Once(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-tick.Chan():
		}
	}
}

// Once reads the files and authenticates once.
func (c *Consumer) Once(ctx context.Context) {
	now := c.cfg.Clock.Now()
	id, secret, err := c.read()
	if err != nil {
		c.count(now, 0, err)
		return
	}
	c.mu.Lock()
	fp := affixtest.Fingerprint(secret)
	if _, ok := c.firstSeen[fp]; !ok {
		c.firstSeen[fp] = now
	}
	c.mu.Unlock()
	status, err := c.authenticate(ctx, id, secret)
	if ctx.Err() != nil {
		return // stopped mid-request: not an attempt
	}
	c.count(now, status, err)
}

func (c *Consumer) count(now time.Time, status int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.Attempts++
	switch {
	case err != nil:
		c.stats.Errors++
		c.stats.LastError = err.Error()
	case status == http.StatusOK:
		c.stats.Accepted++
	case status == http.StatusUnauthorized:
		c.stats.Refused++
		if c.stats.FirstRefused.IsZero() {
			c.stats.FirstRefused = now
		}
		c.stats.LastRefused = now
	default:
		c.stats.Errors++
		c.stats.LastError = fmt.Sprintf("token request answered %d", status)
	}
}

// read returns the client id and secret the files hold now.
func (c *Consumer) read() (id, secret string, err error) {
	b, err := os.ReadFile(c.cfg.SecretFile)
	if err != nil {
		return "", "", fmt.Errorf("read the client secret: %w", err)
	}
	secret = trimNewline(string(b))
	if secret == "" {
		return "", "", fmt.Errorf("client secret file %s is empty", c.cfg.SecretFile)
	}
	id = c.cfg.ClientID
	if c.cfg.ClientIDFile != "" {
		b, err := os.ReadFile(c.cfg.ClientIDFile)
		if err != nil {
			return "", "", fmt.Errorf("read the client id: %w", err)
		}
		if v := trimNewline(string(b)); v != "" {
			id = v
		}
	}
	if id == "" {
		return "", "", errors.New("no client id")
	}
	return id, secret, nil
}

func trimNewline(s string) string {
	if t, ok := strings.CutSuffix(s, "\r\n"); ok {
		return t
	}
	return strings.TrimSuffix(s, "\n")
}

// authenticate sends one client-credentials request with HTTP Basic
// credentials and returns the status. Errors never hold the secret.
func (c *Consumer) authenticate(ctx context.Context, id, secret string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.cfg.TokenURL, strings.NewReader("grant_type=client_credentials"))
	if err != nil {
		return 0, fmt.Errorf("token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	resp, err := c.cfg.HTTP.Do(req)
	if err != nil {
		// *url.Error names the URL only; the credentials are in a header.
		return 0, fmt.Errorf("token request: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// Stats returns the counts so far.
func (c *Consumer) Stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stats
}

// FirstSeen returns when the consumer first read the secret with this
// fingerprint from its file (to within Interval of the file changing).
func (c *Consumer) FirstSeen(fingerprint string) (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	t, ok := c.firstSeen[fingerprint]
	return t, ok
}
