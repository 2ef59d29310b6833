// Package affix is a client for the Affix management API endpoint that
// updates an API client, POST /2023-03-01/management/client, as documented
// on Affix's "Update client" page: request body, the documented error bodies,
// and the check that a 200 echoes exactly the set of client secrets sent.
// No secret and no API key ever appears in an error it returns.
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

	"github.com/affix-rotator/affix-rotator/internal/secret"
)

// Path is the endpoint this package drives.
const Path = "/2023-03-01/management/client"

const (
	maxResponse = 1 << 20  // a 200 larger than this is hostile
	maxError    = 64 << 10 // error bodies are read up to this
)

// Client talks to one Affix account (one base URL and API key).
type Client struct {
	endpoint string
	apiKey   secret.Value
	http     *http.Client
	timeout  time.Duration
	ua       string
	limiter  Limiter
}

// Limiter paces requests (e.g. *rate.Limiter from golang.org/x/time/rate).
type Limiter interface {
	Wait(ctx context.Context) error
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: one with the timeout).
func WithHTTPClient(h *http.Client) Option { return func(c *Client) { c.http = h } }

// WithTimeout bounds each request (default 30s).
func WithTimeout(d time.Duration) Option { return func(c *Client) { c.timeout = d } }

// WithUserAgent sets the User-Agent header (default "affix-rotator").
func WithUserAgent(ua string) Option { return func(c *Client) { c.ua = ua } }

// WithLimiter paces every request through l (one limiter per API key).
func WithLimiter(l Limiter) Option { return func(c *Client) { c.limiter = l } }

// New returns a client for baseURL (e.g. https://api.affixapi.com) that
// authenticates with apiKey, sent verbatim as the Authorization header.
func New(baseURL string, apiKey secret.Value, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, errors.New("affix: base URL must be an absolute http(s) URL without credentials, query or fragment")
	}
	if apiKey.IsZero() {
		return nil, errors.New("affix: the API key is empty")
	}
	for _, r := range apiKey.Reveal() {
		if r < 0x20 || r == 0x7f {
			return nil, errors.New("affix: the API key holds a control character (a newline?) and cannot be sent in a header")
		}
	}
	c := &Client{endpoint: strings.TrimRight(baseURL, "/") + Path, apiKey: apiKey, timeout: 30 * time.Second, ua: "affix-rotator"}
	for _, o := range opts {
		o(c)
	}
	if c.http == nil {
		c.http = &http.Client{Timeout: c.timeout}
	}
	return c, nil
}

// Nullable is an optional string field that can be sent as JSON null.
type Nullable struct {
	Set, Null bool
	Value     string
}

// UpdateRequest is the body of an update. Only the fields set are sent.
type UpdateRequest struct {
	ClientSecret []secret.Value // required, sent in this order
	Name         *string        // omitted when nil
	RedirectURIs []string       // omitted when nil
	WebhookURI   Nullable       // omitted unless Set; Set && Null sends null
}

// UpdateResponse is a 200's body.
type UpdateResponse struct {
	ClientID     string
	ClientSecret []secret.Value
	RedirectURIs []string
	Name         string
	WebhookURI   *string
}

// MarshalJSON renders the request body; it is the one place secrets are revealed.
func (r UpdateRequest) MarshalJSON() ([]byte, error) {
	m := map[string]any{}
	cs := make([]string, len(r.ClientSecret))
	for i, s := range r.ClientSecret {
		cs[i] = s.Reveal()
	}
	m["client_secret"] = cs
	if r.Name != nil {
		m["name"] = *r.Name
	}
	if r.RedirectURIs != nil {
		m["redirect_uris"] = r.RedirectURIs
	}
	if r.WebhookURI.Set {
		if r.WebhookURI.Null {
			m["webhook_uri"] = nil
		} else {
			m["webhook_uri"] = r.WebhookURI.Value
		}
	}
	return json.Marshal(m)
}

// UpdateClient sends req and returns Affix's answer. A 200 whose
// client_secret is not exactly the set sent is a *MismatchError.
func (c *Client) UpdateClient(ctx context.Context, req UpdateRequest) (*UpdateResponse, error) {
	if len(req.ClientSecret) == 0 {
		return nil, errors.New("affix: update without a client secret")
	}
	red := c.redactor(req.ClientSecret)
	body, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("affix: encode request: %w", err)
	}
	if c.limiter != nil {
		if err := c.limiter.Wait(ctx); err != nil {
			return nil, &TransportError{msg: "waiting for the rate limiter: " + err.Error(), cause: err}
		}
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("affix: build request: %w", err)
	}
	hr.Header.Set("Authorization", c.apiKey.Reveal())
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("Accept", "application/json")
	hr.Header.Set("User-Agent", c.ua)
	resp, err := c.http.Do(hr)
	if err != nil {
		return nil, &TransportError{msg: red(transportText(err)), cause: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, maxError))
		return nil, newAPIError(resp, b, red)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, &TransportError{msg: red("reading the response: " + err.Error()), cause: err}
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

type wireResponse struct {
	ClientID     *string   `json:"client_id"`
	ClientSecret *[]string `json:"client_secret"`
	RedirectURIs []string  `json:"redirect_uris"`
	Name         string    `json:"name"`
	WebhookURI   *string   `json:"webhook_uri"`
}

// decodeResponse parses a 200 strictly: client_secret must be a list of strings.
func decodeResponse(b []byte) (*UpdateResponse, error) {
	var w wireResponse
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&w); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("field %q has the wrong type (%s)", te.Field, te.Value)
		}
		return nil, errors.New("body is not the documented JSON object")
	}
	if dec.More() {
		return nil, errors.New("trailing data after the JSON object")
	}
	if w.ClientSecret == nil {
		return nil, errors.New("no client_secret in the response")
	}
	out := &UpdateResponse{RedirectURIs: w.RedirectURIs, Name: w.Name, WebhookURI: w.WebhookURI}
	if w.ClientID != nil {
		out.ClientID = *w.ClientID
	}
	for _, s := range *w.ClientSecret {
		out.ClientSecret = append(out.ClientSecret, secret.New(s))
	}
	return out, nil
}

// mismatch compares the sets; nil when equal.
func mismatch(sent, got []secret.Value) *MismatchError {
	in := func(list []secret.Value, v secret.Value) bool {
		for _, x := range list {
			if x.Equal(v) {
				return true
			}
		}
		return false
	}
	m := &MismatchError{Sent: len(sent), Got: len(got), contains: make([]bool, len(sent))}
	equal := len(sent) == len(got)
	for i, s := range sent {
		m.contains[i] = in(got, s)
		equal = equal && m.contains[i]
	}
	for i, g := range got {
		if !in(sent, g) {
			m.Unexpected++
			equal = false
		}
		if in(got[:i], g) {
			equal = false // duplicates
		}
	}
	if equal {
		return nil
	}
	return m
}

// redactor returns a function that removes the API key and the secrets of
// one request from text that came from the (untrusted) server or the
// network stack, strips control characters and bounds its length.
func (c *Client) redactor(secrets []secret.Value) func(string) string {
	vals := []string{c.apiKey.Reveal()}
	for _, s := range secrets {
		vals = append(vals, s.Reveal())
	}
	return func(s string) string {
		for _, v := range vals {
			if v != "" {
				s = strings.ReplaceAll(s, v, secret.Redacted)
			}
		}
		s = strings.Map(func(r rune) rune {
			if r < 0x20 || r == 0x7f {
				return ' '
			}
			return r
		}, s)
		if len(s) > 256 {
			s = s[:256] + "…"
		}
		return s
	}
}

// transportText describes a transport error without the URL's userinfo.
func transportText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		u, perr := url.Parse(ue.URL)
		where := "the Affix API"
		if perr == nil {
			u.User = nil
			where = u.Redacted()
		}
		return fmt.Sprintf("%s %s: %v", ue.Op, where, ue.Err)
	}
	return err.Error()
}
