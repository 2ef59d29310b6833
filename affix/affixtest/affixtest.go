// Package affixtest is a fake Affix API server for tests, in the spirit of
// net/http/httptest. It is faithful to the "Update client" page: it serves
// only POST /2023-03-01/management/client, checks the Authorization header
// (the API key, verbatim), the content type and the body the way the real
// API does, answers the documented bodies, keeps the set of accepted
// secrets per client, records every request, and can be told to answer any
// documented failure, to hang, to drop the connection, or to lie.
package affixtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"time"
)

// Path is the one endpoint served.
const Path = "/2023-03-01/management/client"

// Fault is what the next request gets instead of normal handling.
type Fault struct {
	// Status answers this status with the documented body for it; the
	// request is not applied.
	Status int `json:"status,omitempty"`
	// RetryAfter is the Retry-After header of a 429 (default "1").
	RetryAfter string `json:"retry_after,omitempty"`
	// Delay holds the request this long before handling it.
	Delay time.Duration `json:"-"`
	// Drop closes the connection without answering; not applied.
	Drop bool `json:"drop,omitempty"`
	// ApplyThenDrop applies the update, then closes the connection: the
	// answer is lost.
	ApplyThenDrop bool `json:"apply_then_drop,omitempty"`
	// Echo answers 200 with this client_secret instead of the real set. The
	// update itself is applied, unless ApplyEcho, which makes the echoed set
	// the accepted one (a truthful but surprising answer).
	Echo      []string `json:"echo,omitempty"`
	ApplyEcho bool     `json:"apply_echo,omitempty"`
	// Body answers 200 with exactly these bytes; the update is applied.
	Body []byte `json:"body,omitempty"`
}

// Request is one request received.
type Request struct {
	Time         time.Time
	Method, Path string
	Header       http.Header
	Body         []byte
	ClientSecret []string // as sent, when the body had them
	Status       int      // answered status; 0 if the connection was dropped
	Applied      bool     // the accepted set was changed
	Fault        string   // the fault injected, if any
}

type client struct {
	id           string
	secrets      []string
	name         string
	redirectURIs []string
	webhookURI   *string
}

// Server is a fake Affix API.
type Server struct {
	// URL is the base URL (http://127.0.0.1:port) while started with NewServer.
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	clients  map[string]*client
	requests []Request
	faults   []Fault
	now      func() time.Time
	log      func(Request)
}

// NewServer starts a fake on a loopback port. Close it when done.
func NewServer() *Server {
	s := NewHandler()
	s.srv = httptest.NewServer(s.Handler())
	s.URL = s.srv.URL
	return s
}

// NewHandler returns a fake that is not listening: serve Handler() (and
// AdminHandler()) yourself.
func NewHandler() *Server {
	return &Server{clients: map[string]*client{}, now: time.Now}
}

// Close stops a server started by NewServer.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
	}
}

// SetClock sets the source of request timestamps (e.g. a fake clock).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// OnRequest sets a function called after each request (e.g. a logger).
func (s *Server) OnRequest(fn func(Request)) {
	s.mu.Lock()
	s.log = fn
	s.mu.Unlock()
}

// AddClient registers the Affix client that apiKey authenticates, with the
// secrets it accepts now.
func (s *Server) AddClient(apiKey, clientID string, secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[apiKey] = &client{id: clientID, secrets: append([]string(nil), secrets...)}
}

// Accepts reports whether secret is accepted for apiKey's client now.
func (s *Server) Accepts(apiKey, secret string) bool {
	for _, x := range s.Secrets(apiKey) {
		if x == secret {
			return true
		}
	}
	return false
}

// Secrets returns the accepted set of apiKey's client.
func (s *Server) Secrets(apiKey string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[apiKey]; ok {
		return append([]string(nil), c.secrets...)
	}
	return nil
}

// Requests returns every request received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Inject queues faults; each following request consumes one, in order.
func (s *Server) Inject(faults ...Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, faults...)
	s.mu.Unlock()
}

// Handler serves the API endpoint.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

type errBody map[string]any

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	s.mu.Lock()
	req := Request{Time: s.now(), Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}
	if u, _ := parseUpdate(body); u != nil {
		req.ClientSecret = u.secrets // recorded even if the request is then dropped
	}
	var f *Fault
	if r.URL.Path == Path && len(s.faults) > 0 {
		f = &s.faults[0]
		s.faults = s.faults[1:]
	}
	s.mu.Unlock()

	status := s.handle(w, r, &req, f)
	req.Status = status
	s.mu.Lock()
	s.requests = append(s.requests, req)
	logf := s.log
	s.mu.Unlock()
	if logf != nil {
		logf(req)
	}
}

// handle answers one request and returns the status sent (0: dropped).
func (s *Server) handle(w http.ResponseWriter, r *http.Request, req *Request, f *Fault) int {
	if f != nil {
		req.Fault = f.describe()
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return 0
			}
		}
	}
	if r.URL.Path != Path {
		return reply(w, 404, errBody{"message": "Not Found"})
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return reply(w, 405, errBody{"message": "Method Not Allowed"})
	}
	s.mu.Lock()
	c, ok := s.clients[r.Header.Get("Authorization")]
	s.mu.Unlock()
	if !ok {
		return reply(w, 401, errBody{"error": "authentication_error", "message": "Your password is incorrect", "code": "incorrect_username_or_password"})
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return reply(w, 400, errBody{"message": "Bad Request", "validation_error": "Content-Type must be application/json"})
	}
	upd, verr := parseUpdate(req.Body)
	if upd != nil {
		req.ClientSecret = upd.secrets
	}
	if verr != "" {
		return reply(w, 400, errBody{"message": "Bad Request", "validation_error": verr})
	}
	if f != nil {
		switch {
		case f.Status != 0:
			return replyStatus(w, f)
		case f.Drop:
			return drop(w)
		}
	}
	s.mu.Lock()
	c.secrets = upd.secrets
	if upd.name != nil {
		c.name = *upd.name
	}
	if upd.redirectURIs != nil {
		c.redirectURIs = upd.redirectURIs
	}
	if upd.webhookSet {
		c.webhookURI = upd.webhookURI
	}
	req.Applied = true
	if f != nil && f.ApplyEcho {
		c.secrets = append([]string(nil), f.Echo...)
	}
	answer := map[string]any{"client_id": c.id, "client_secret": c.secrets, "redirect_uris": orEmpty(c.redirectURIs), "name": c.name, "webhook_uri": c.webhookURI}
	s.mu.Unlock()
	if f != nil {
		switch {
		case f.ApplyThenDrop:
			return drop(w)
		case f.Body != nil:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(200)
			_, _ = w.Write(f.Body)
			return 200
		case f.Echo != nil:
			answer["client_secret"] = f.Echo
		}
	}
	return reply(w, 200, answer)
}

func orEmpty(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type update struct {
	secrets      []string
	name         *string
	redirectURIs []string
	webhookSet   bool
	webhookURI   *string
}

// parseUpdate validates the body like the real API: a JSON object with only
// the documented keys and types. Messages never echo values.
func parseUpdate(b []byte) (*update, string) {
	if len(b) > 1<<20 {
		return nil, "body too large"
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, "body must be a JSON object"
	}
	if dec.More() {
		return nil, "body must be a single JSON object"
	}
	u := &update{}
	for k, v := range raw {
		switch k {
		case "client_secret":
			if err := json.Unmarshal(v, &u.secrets); err != nil || u.secrets == nil {
				return nil, "client_secret must be an array of strings"
			}
		case "redirect_uris":
			if err := json.Unmarshal(v, &u.redirectURIs); err != nil || u.redirectURIs == nil {
				return nil, "redirect_uris must be an array of strings"
			}
		case "name":
			var n string
			if err := json.Unmarshal(v, &n); err != nil || string(v) == "null" {
				return nil, "name must be a string"
			}
			u.name = &n
		case "webhook_uri":
			u.webhookSet = true
			if string(bytes.TrimSpace(v)) != "null" {
				var w string
				if err := json.Unmarshal(v, &w); err != nil {
					return nil, "webhook_uri must be a string or null"
				}
				u.webhookURI = &w
			}
		default:
			return nil, "unknown field " + strconv.Quote(truncate(k, 40))
		}
	}
	if u.secrets == nil {
		return u, "client_secret is required"
	}
	if len(u.secrets) == 0 || len(u.secrets) > 10 {
		return u, "client_secret must hold 1 to 10 secrets"
	}
	seen := map[string]bool{}
	for _, s := range u.secrets {
		if s == "" {
			return u, "client_secret must not hold an empty string"
		}
		if seen[s] {
			return u, "client_secret must not hold duplicates"
		}
		seen[s] = true
	}
	return u, ""
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func reply(w http.ResponseWriter, status int, body any) int {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
	return status
}

// replyStatus answers the documented body of a status.
func replyStatus(w http.ResponseWriter, f *Fault) int {
	switch f.Status {
	case 400:
		return reply(w, 400, errBody{"message": "Bad Request", "validation_error": "injected validation error"})
	case 401:
		return reply(w, 401, errBody{"error": "authentication_error", "message": "Your password is incorrect", "code": "incorrect_username_or_password"})
	case 409:
		return reply(w, 409, errBody{"code": "conflict_code", "token": "tok_" + hex.EncodeToString([]byte("injected-access-token")), "error": "conflict"})
	case 429:
		ra := f.RetryAfter
		if ra == "" {
			ra = "1"
		}
		w.Header().Set("Retry-After", ra)
		return reply(w, 429, errBody{"message": "Too Many Requests"})
	default:
		return reply(w, f.Status, errBody{"message": http.StatusText(f.Status)})
	}
}

func drop(w http.ResponseWriter) int {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err == nil {
		_ = conn.Close()
	}
	return 0
}

func (f *Fault) describe() string {
	switch {
	case f.Status != 0:
		return "status " + strconv.Itoa(f.Status)
	case f.Drop:
		return "drop"
	case f.ApplyThenDrop:
		return "apply-then-drop"
	case f.ApplyEcho:
		return "apply-echo"
	case f.Echo != nil:
		return "echo"
	case f.Body != nil:
		return "body"
	case f.Delay > 0:
		return "delay " + f.Delay.String()
	}
	return "none"
}

// Fingerprint identifies a secret without revealing it: the first 12 hex
// digits of its SHA-256.
func Fingerprint(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])[:12]
}
