// Package affix is a client for the Affix management API endpoint that
// updates an API client, POST /2023-03-01/management/client, as documented
// on Affix's "Update client" page: the request body (client_secret plus only
// the optional fields that are set), the documented error bodies, and the
// check that a 200 echoes exactly the set of client secrets sent.
//
// Every error it returns is one of *APIError (a non-200 answer),
// *MismatchError (a 200 whose client_secret is not the set sent),
// *ResponseError (a 200 whose body is not the documented object),
// *TransportError (no answer) or an error wrapping ErrInvalidRequest (the
// request was refused before it was sent). Definite, Transient, RetryAfter
// and StatusLabel classify them.
//
// No secret and no API key ever appears in an error's text: whatever comes
// from the server or the network stack is treated as untrusted, the API key
// and the secrets of the request are replaced by "[REDACTED]", control
// characters are removed and each server string is cut to 256 bytes.
package affix

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/affix-rotator/affix-rotator/internal/redact"
	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Path is the endpoint this package drives, appended to the base URL.
const Path = "/2023-03-01/management/client"

const (
	// DefaultTimeout bounds each request unless WithTimeout says otherwise.
	DefaultTimeout = 30 * time.Second
	// DefaultUserAgent is the User-Agent header unless WithUserAgent says otherwise.
	DefaultUserAgent = "affix-rotator"

	maxResponse  = 1 << 20  // a 200 larger than this is hostile
	maxError     = 64 << 10 // error bodies are read up to this
	maxServerStr = 256      // each server string kept in an error, in bytes
)

// ErrInvalidRequest is wrapped by the errors UpdateClient returns for a
// request it refuses to send (no secret, an empty or a repeated secret).
// Nothing was sent, so nothing was applied.
var ErrInvalidRequest = errors.New("affix: invalid update request")

// Client talks to one Affix account (one base URL and API key). It is safe
// for concurrent use.
type Client struct {
	endpoint string
	apiKey   secret.Value
	http     *http.Client
	timeout  time.Duration
	ua       string
	limiter  Limiter
}

// Limiter paces requests (e.g. *rate.Limiter from golang.org/x/time/rate,
// or a *pace.Pacer shared by the clients of one account).
type Limiter interface {
	Wait(ctx context.Context) error
}

// ErrNotSent wraps the failures that happen before a request leaves: Affix
// cannot have applied it.
var ErrNotSent = errors.New("affix: request not sent")

// Throttler is a Limiter that holds the whole account back after a 429:
// Throttle is called as soon as one arrives, with its Retry-After (0 when
// absent or unusable), before the error is returned.
type Throttler interface {
	Throttle(retryAfter time.Duration)
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: &http.Client{Timeout:
// timeout}). The client is copied and the copy never follows redirects: a
// redirected POST could carry the secrets or the API key to another host,
// so a 3xx is returned as an *APIError instead. A nil h is ignored.
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithTimeout bounds each request, from sending it to reading the whole
// answer (default 30s). It must be positive.
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithUserAgent sets the User-Agent header (default "affix-rotator").
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// WithLimiter paces every request through l (one limiter per API key).
func WithLimiter(l Limiter) Option { return func(c *Client) { c.limiter = l } }

// New returns a client for baseURL (e.g. https://api.affixapi.com; a path
// prefix and a trailing slash are allowed) that authenticates with apiKey,
// sent verbatim as the Authorization header as in Affix's curl examples.
// baseURL must be an absolute http or https URL without credentials, query
// or fragment; apiKey must be non-empty and hold no control character.
// Errors name neither the key nor the URL's credentials.
func New(baseURL string, apiKey secret.Value, opts ...Option) (*Client, error) {
	if err := checkBaseURL(baseURL); err != nil {
		return nil, err
	}
	if apiKey.IsZero() {
		return nil, errors.New("affix: the API key is empty")
	}
	if err := checkAPIKey(apiKey.Reveal()); err != nil {
		return nil, err
	}
	c := &Client{
		endpoint: strings.TrimRight(baseURL, "/") + Path,
		apiKey:   apiKey,
		timeout:  DefaultTimeout,
		ua:       DefaultUserAgent,
	}
	for _, o := range opts {
		if o != nil {
			o(c)
		}
	}
	if c.timeout <= 0 {
		return nil, fmt.Errorf("affix: the timeout must be positive, not %s", c.timeout)
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: c.timeout}
	} else {
		h := *c.http
		c.http = &h
	}
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// checkAPIKey makes sure the key travels verbatim in a header; its errors
// never quote the key.
func checkAPIKey(k string) error {
	if !utf8.ValidString(k) {
		return errors.New("affix: the API key is not valid UTF-8")
	}
	for i, r := range k {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return fmt.Errorf("affix: the API key holds a control character at byte %d of %d (a trailing newline?) and cannot be sent in a header", i, len(k))
		}
	}
	if strings.TrimSpace(k) != k {
		return errors.New("affix: the API key starts or ends with white space, which HTTP would strip from the header")
	}
	return nil
}

// checkBaseURL validates a base URL; its errors never quote the URL, which
// could hold credentials.
func checkBaseURL(baseURL string) error {
	u, err := url.Parse(baseURL)
	switch {
	case err != nil:
		return errors.New("affix: the base URL does not parse")
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("affix: the base URL must be an absolute http:// or https:// URL")
	case u.Host == "" || u.Opaque != "":
		return errors.New("affix: the base URL has no host")
	case u.User != nil:
		return errors.New("affix: the base URL must not hold credentials (the API key is sent in the Authorization header)")
	case u.RawQuery != "" || u.ForceQuery || strings.Contains(baseURL, "?"):
		return errors.New("affix: the base URL must not have a query")
	case u.Fragment != "" || strings.Contains(baseURL, "#"):
		return errors.New("affix: the base URL must not have a fragment")
	}
	return nil
}

// Nullable is an optional string field that can be sent as an explicit
// JSON null: omitted unless Set; Set && Null sends null; otherwise Value.
type Nullable struct {
	Set, Null bool
	Value     string
}

// UpdateRequest is the body of an update. Only the fields set are sent.
type UpdateRequest struct {
	ClientSecret []secret.Value // required, 1+ distinct non-empty entries, sent in this order
	Name         *string        // omitted when nil
	RedirectURIs []string       // omitted when nil (an empty non-nil slice sends [])
	WebhookURI   Nullable       // omitted unless Set; Set && Null sends null
}

// UpdateResponse is a 200's body.
type UpdateResponse struct {
	ClientID     string
	ClientSecret []secret.Value // in the order Affix answered
	RedirectURIs []string
	Name         string
	WebhookURI   *string // nil when null or absent
}

// MarshalJSON implements json.Marshaler for logs and debugging: it
// renders the request as Body does, with every secret "[REDACTED]".
func (r UpdateRequest) MarshalJSON() ([]byte, error) {
	red := r
	red.ClientSecret = make([]secret.Value, len(r.ClientSecret))
	for i := range red.ClientSecret {
		red.ClientSecret[i] = secret.New(secret.Redacted)
	}
	return red.Body()
}

// Body renders the request body sent to Affix: client_secret, then only
// those of name, redirect_uris and webhook_uri that are set, in that
// order. It is the one place secrets are revealed (json.Marshal of a
// request redacts them).
func (r UpdateRequest) Body() ([]byte, error) {
	cs := make([]string, len(r.ClientSecret))
	for i, s := range r.ClientSecret {
		cs[i] = s.Reveal()
	}
	var b bytes.Buffer
	field := func(sep, key string, v any) error {
		b.WriteString(sep + `"` + key + `":`)
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false) // the values travel byte for byte
		if err := enc.Encode(v); err != nil {
			return err
		}
		b.Truncate(b.Len() - 1) // Encode's newline
		return nil
	}
	if err := field("{", "client_secret", cs); err != nil {
		return nil, err
	}
	if r.Name != nil {
		if err := field(",", "name", *r.Name); err != nil {
			return nil, err
		}
	}
	if r.RedirectURIs != nil {
		if err := field(",", "redirect_uris", r.RedirectURIs); err != nil {
			return nil, err
		}
	}
	if r.WebhookURI.Set {
		var v any
		if !r.WebhookURI.Null {
			v = r.WebhookURI.Value
		}
		if err := field(",", "webhook_uri", v); err != nil {
			return nil, err
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// validate refuses requests the API would reject anyway.
func (r UpdateRequest) validate() error {
	if len(r.ClientSecret) == 0 {
		return fmt.Errorf("%w: no client secret", ErrInvalidRequest)
	}
	for i, s := range r.ClientSecret {
		if s.IsZero() {
			return fmt.Errorf("%w: client secret %d is empty", ErrInvalidRequest, i)
		}
		for j := range i {
			if r.ClientSecret[j].Equal(s) {
				return fmt.Errorf("%w: client secrets %d and %d are the same", ErrInvalidRequest, j, i)
			}
		}
	}
	return nil
}

// UpdateClient sends req and returns Affix's answer.
//
// A 200 whose client_secret is not exactly the set sent returns the decoded
// response together with a *MismatchError. Any other failure returns a nil
// response and one of the error types described in the package comment.
func (c *Client) UpdateClient(ctx context.Context, req UpdateRequest) (*UpdateResponse, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	red := c.redactor(req.ClientSecret)
	body, err := req.Body() // not json.Marshal, which redacts the secrets
	if err != nil {
		return nil, fmt.Errorf("%w: encode request: %w", ErrNotSent, err)
	}
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, fmt.Errorf("%w: waiting for the rate limiter: %w", ErrNotSent, err)
		}
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: build request: %s", ErrNotSent, red(err.Error()))
	}
	hr.Header.Set("Authorization", c.apiKey.Reveal())
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.ua)
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, c.transportError("", err, parent, red)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		if t, ok := c.limiter.(Throttler); ok && resp.StatusCode == http.StatusTooManyRequests {
			// Hold the account at once, before reading the body.
			var ra time.Duration
			if h := resp.Header.Values("Retry-After"); len(h) > 0 {
				ra, _, _ = parseRetryAfter(h[0], time.Now(), red)
			}
			t.Throttle(ra)
		}
		// The status is the answer; a body cut short just has less detail.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxError))
		return nil, newAPIError(resp, b, red)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, c.transportError("reading the 200 response", err, parent, red)
	}
	if len(b) > maxResponse {
		return nil, &ResponseError{Problem: fmt.Sprintf("body larger than %d bytes", maxResponse)}
	}
	out, err := decodeResponse(b)
	if err != nil {
		return nil, &ResponseError{Problem: red(err.Error())}
	}
	if mm := mismatch(req.ClientSecret, out.ClientSecret); mm != nil {
		return out, mm
	}
	return out, nil
}

// transportError wraps a failure to get an answer, noting when it was the
// request's own timeout.
func (c *Client) transportError(what string, err error, parent context.Context, red func(string) string) *TransportError {
	te := newTransportError(what, err, parent, red)
	if !te.callerDone && te.Timeout() {
		te.msg += fmt.Sprintf(" (request timeout %s)", c.timeout)
	}
	return te
}

// decodeResponse parses a 200 strictly: a JSON object whose client_secret
// is an array of strings; the other documented keys, when present and not
// null, must have their documented types. Unknown keys are tolerated. Its
// errors name keys and JSON types, never values.
func decodeResponse(b []byte) (*UpdateResponse, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, errors.New("body is not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("trailing data after the JSON object")
	}
	out := &UpdateResponse{}
	cs, ok := raw["client_secret"]
	if !ok || isNull(cs) {
		return nil, errors.New("no client_secret in the response")
	}
	var list []*string
	if err := json.Unmarshal(cs, &list); err != nil {
		return nil, errors.New("client_secret is not an array of strings")
	}
	for _, s := range list {
		if s == nil {
			return nil, errors.New("client_secret holds a null")
		}
		out.ClientSecret = append(out.ClientSecret, secret.New(*s))
	}
	if err := optString(raw, "client_id", &out.ClientID); err != nil {
		return nil, err
	}
	if err := optString(raw, "name", &out.Name); err != nil {
		return nil, err
	}
	if v, ok := raw["webhook_uri"]; ok && !isNull(v) {
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return nil, errors.New("webhook_uri is neither a string nor null")
		}
		out.WebhookURI = &s
	}
	if v, ok := raw["redirect_uris"]; ok && !isNull(v) {
		var l []*string
		if err := json.Unmarshal(v, &l); err != nil {
			return nil, errors.New("redirect_uris is not an array of strings")
		}
		out.RedirectURIs = make([]string, 0, len(l))
		for _, s := range l {
			if s == nil {
				return nil, errors.New("redirect_uris holds a null")
			}
			out.RedirectURIs = append(out.RedirectURIs, *s)
		}
	}
	return out, nil
}

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

func optString(raw map[string]json.RawMessage, key string, dst *string) error {
	v, ok := raw[key]
	if !ok || isNull(v) {
		return nil
	}
	if err := json.Unmarshal(v, dst); err != nil {
		return fmt.Errorf("%s is not a string", key)
	}
	return nil
}

// mismatch compares the set sent with the set answered; nil when they are
// the same set (any order, no extras, no duplicates).
func mismatch(sent, got []secret.Value) *MismatchError {
	index := func(list []secret.Value, v secret.Value) int {
		for i, x := range list {
			if x.Equal(v) {
				return i
			}
		}
		return -1
	}
	m := &MismatchError{Sent: len(sent), Got: len(got)}
	for i, s := range sent {
		if index(got, s) >= 0 {
			m.Included = append(m.Included, i)
		} else {
			m.MissingSent++
		}
	}
	for i, g := range got {
		switch {
		case index(got[:i], g) >= 0:
			m.Duplicates++
		case index(sent, g) < 0:
			m.Unexpected++
		}
	}
	if m.MissingSent == 0 && m.Unexpected == 0 && m.Duplicates == 0 {
		return nil
	}
	return m
}

// redactor returns a function that makes text from the (untrusted) server
// or the network stack safe to show: it replaces the API key and the
// secrets of one request, raw or encoded (redact.Forms), by "[REDACTED]",
// turns control characters and invalid UTF-8 into spaces and cuts the
// result to 256 bytes.
func (c *Client) redactor(secrets []secret.Value) func(string) string {
	set := redact.New(c.apiKey.Reveal())
	set.AddValues(secrets...)
	return func(s string) string { return sanitize(s, set) }
}

// sanitize implements the redactor. Control characters and invalid UTF-8
// become spaces (never removed, so that removing them cannot join the
// halves of a secret the server split); redaction comes after that (so the
// replacement cannot form a secret, as a fuzzer found with a secret holding
// a space) and before the cut (so the cut never leaves a prefix of a
// secret behind).
func sanitize(s string, set *redact.Set) string {
	s = strings.ToValidUTF8(s, " ")
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return ' '
		}
		return r
	}, s)
	return truncate(set.String(s), maxServerStr)
}

// truncate cuts s to at most n bytes at a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}
