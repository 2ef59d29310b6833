// Package affixtest is a fake Affix API server for tests, in the spirit of
// net/http/httptest. It is faithful to the "Update client" page: it serves
// only POST /2023-03-01/management/client, checks the Authorization header
// (the API key, verbatim), the content type and the body the way the real
// API does, answers the documented bodies, keeps the set of accepted
// secrets per client, records every request, and can be told to answer any
// documented failure, to hang, to drop the connection, or to lie.
//
// Beside the API it serves one endpoint that is not Affix's: TokenPath, a
// stand-in for how consumers use their client id and secret, so that tests
// can check from a consumer's side that the secret it holds is accepted.
package affixtest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"math"
	"mime"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Path is the one endpoint served.
const Path = "/2023-03-01/management/client"

// Fault is what one request gets instead of normal handling. Faults are
// queued with Inject and consumed one per request to the API path, in
// order. The zero Fault means normal handling. The request is validated
// first (after Delay): an invalid request gets its 400 or 401 whatever the
// fault says.
type Fault struct {
	// Status answers this status with the spec's documented body for it
	// (400 {message, validation_error}, 401 {error, message, code}, 409
	// {code, token, error}, 429 {message} + Retry-After, others {message});
	// the request is not applied.
	Status int
	// RetryAfter is the Retry-After header (default "1" for a 429; sent
	// with any other Status only when set).
	RetryAfter string
	// Delay holds the request this long before handling it (ended early if
	// the client goes away: then nothing is applied or answered).
	Delay time.Duration
	// Drop closes the connection without answering; not applied.
	Drop bool
	// ApplyThenDrop applies the update, then closes the connection: the
	// answer is lost.
	ApplyThenDrop bool
	// Echo answers 200 with this client_secret instead of the real set. The
	// update itself is applied (unless Status is set), and the accepted set
	// is what was sent, unless ApplyEcho, which makes the echoed set the
	// accepted one (a truthful but surprising answer).
	Echo      []string
	ApplyEcho bool
	// Body answers 200 with exactly these bytes (a hostile or malformed
	// answer); the update is applied.
	Body []byte
}

// Request is one request received.
type Request struct {
	Time         time.Time // when it arrived (SetClock)
	Method, Path string
	Header       http.Header
	Body         []byte                     // as received (at most 1 MiB + 1 byte)
	ClientSecret []string                   // as sent, when the body held a valid client_secret
	Fields       map[string]json.RawMessage // the body's top-level keys, when it was a JSON object
	Status       int                        // answered status; 0 if the connection was dropped or the client left
	Applied      bool                       // the update was applied
	Fault        string                     // the fault injected, if any
}

type client struct {
	id           string
	secrets      []string
	name         string
	redirectURIs []string
	webhookURI   *string
}

// Server is a fake Affix API. Its methods are safe for concurrent use.
type Server struct {
	// URL is the base URL (http://127.0.0.1:port) of a server started with
	// NewServer; empty for NewHandler.
	URL string

	srv      *httptest.Server
	mu       sync.Mutex
	clients  map[string]*client
	requests []*entry
	faults   []Fault
	now      func() time.Time
	log      func(Request)
	limit    *rate.Limiter     // SetRateLimit; nil: unlimited
	limited  int               // requests refused by the rate limit
	auths    map[string]*Auths // TokenPath authentications by client_id presented
	tokens   int               // access tokens issued at TokenPath
}

// entry is a request being handled (done once answered or dropped).
type entry struct {
	Request
	done bool
}

// NewServer starts a fake on a loopback port (127.0.0.1:0, via httptest).
// Close it when done.
func NewServer() *Server {
	s := NewHandler()
	s.srv = httptest.NewServer(s.Handler())
	s.URL = s.srv.URL
	return s
}

// NewHandler returns a fake that is not listening: serve Handler() (or Mux,
// which adds the admin endpoints) on a listener of your own.
func NewHandler() *Server {
	return &Server{clients: map[string]*client{}, now: time.Now}
}

// Close stops a server started by NewServer (dropping connections that are
// still open); it does nothing for NewHandler.
func (s *Server) Close() {
	if s.srv != nil {
		s.srv.CloseClientConnections()
		s.srv.Close()
	}
}

// SetRateLimit makes the server answer 429 (the documented body, and a
// Retry-After of the whole seconds until a request would be allowed, at
// least 1) to requests to the API path beyond perSecond requests per second
// with bursts of burst, all API keys together: the fake is one account.
// Injected faults come first and are not counted. perSecond <= 0 removes
// the limit. Timestamps come from SetClock's clock.
func (s *Server) SetRateLimit(perSecond float64, burst int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.limit = nil
	if perSecond > 0 {
		s.limit = rate.NewLimiter(rate.Limit(perSecond), max(1, burst))
	}
}

// RateLimited returns how many requests the rate limit refused.
func (s *Server) RateLimited() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.limited
}

// overLimit takes a token for a request arriving at now, or returns the 429
// to answer. Called with s.mu held.
func (s *Server) overLimit(now time.Time) *Fault {
	res := s.limit.ReserveN(now, 1)
	wait := res.DelayFrom(now)
	if res.OK() && wait == 0 {
		return nil
	}
	res.CancelAt(now)
	s.limited++
	secs := max(1, int(math.Ceil(wait.Seconds())))
	return &Fault{Status: http.StatusTooManyRequests, RetryAfter: strconv.Itoa(secs)}
}

// SetClock sets the source of request timestamps (e.g. a fake clock).
func (s *Server) SetClock(now func() time.Time) {
	s.mu.Lock()
	s.now = now
	s.mu.Unlock()
}

// OnRequest sets a function called after each request is handled (e.g. a
// logger). It runs outside the server's lock.
func (s *Server) OnRequest(fn func(Request)) {
	s.mu.Lock()
	s.log = fn
	s.mu.Unlock()
}

// AddClient registers the Affix client that apiKey authenticates (the key
// identifies the account and its client), with the secrets it accepts now.
// Registering a key again replaces its client.
func (s *Server) AddClient(apiKey, clientID string, secrets ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clients[apiKey] = &client{id: clientID, secrets: append([]string(nil), secrets...)}
}

// ClientID returns the client_id of apiKey's client ("" if none).
func (s *Server) ClientID(apiKey string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[apiKey]; ok {
		return c.id
	}
	return ""
}

// Accepts reports whether secret is accepted for apiKey's client now.
func (s *Server) Accepts(apiKey, secret string) bool {
	if secret == "" {
		return false
	}
	for _, x := range s.Secrets(apiKey) {
		if x == secret {
			return true
		}
	}
	return false
}

// Secrets returns a copy of the accepted set of apiKey's client, in the
// order last sent (nil if no such client).
func (s *Server) Secrets(apiKey string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c, ok := s.clients[apiKey]; ok {
		return append([]string(nil), c.secrets...)
	}
	return nil
}

// Requests returns a copy of every request handled so far, in the order
// they arrived. A request still being handled (e.g. delayed) is not listed
// until it is answered or dropped.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Request, 0, len(s.requests))
	for _, e := range s.requests {
		if e.done {
			out = append(out, e.Request)
		}
	}
	return out
}

// Inject queues faults; each following request to the API path consumes
// one, first in first out.
func (s *Server) Inject(faults ...Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, faults...)
	s.mu.Unlock()
}

// Pending returns the number of queued faults not yet consumed.
func (s *Server) Pending() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.faults)
}

// Handler serves the API endpoint and the consumer stand-in at TokenPath
// (and answers 404 anywhere else).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serve) }

type errBody map[string]any

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == TokenPath {
		s.serveToken(w, r) // the consumers' traffic: neither recorded nor faulted
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	e := &entry{Request: Request{Method: r.Method, Path: r.URL.Path, Header: r.Header.Clone(), Body: body}}
	if u, _ := parseUpdate(body); u != nil {
		e.ClientSecret, e.Fields = u.secrets, u.fields // recorded even if the request is then refused
	}
	var f *Fault
	s.mu.Lock()
	e.Time = s.now()
	s.requests = append(s.requests, e)
	if r.URL.Path == Path && len(s.faults) > 0 {
		f = &s.faults[0]
		s.faults = s.faults[1:]
	}
	if f == nil && r.URL.Path == Path && s.limit != nil {
		f = s.overLimit(e.Time)
	}
	s.mu.Unlock()

	resp := s.handle(r, &e.Request, f)
	// Record before answering: a client that has its answer (or has seen
	// the connection drop) finds the request in Requests.
	s.mu.Lock()
	e.Status = resp.status
	e.done = true
	req, logf := e.Request, s.log
	s.mu.Unlock()
	if logf != nil {
		logf(req)
	}
	resp.write(w)
}

// handle decides the answer to one request, applying it if valid.
func (s *Server) handle(r *http.Request, req *Request, f *Fault) *response {
	if f != nil {
		req.Fault = f.describe()
		if f.Delay > 0 {
			t := time.NewTimer(f.Delay)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return &response{drop: true} // the client left: nothing to answer
			}
		}
	}
	if r.URL.Path != Path {
		return jsonResponse(http.StatusNotFound, errBody{"message": "Not Found"})
	}
	if r.Method != http.MethodPost {
		resp := jsonResponse(http.StatusMethodNotAllowed, errBody{"message": "Method Not Allowed"})
		resp.header.Set("Allow", http.MethodPost)
		return resp
	}
	auth := r.Header.Values("Authorization")
	s.mu.Lock()
	var c *client
	if len(auth) == 1 {
		c = s.clients[auth[0]]
	}
	s.mu.Unlock()
	if c == nil {
		return jsonResponse(http.StatusUnauthorized, unauthorized)
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" || len(r.Header.Values("Content-Type")) != 1 {
		return jsonResponse(http.StatusBadRequest, errBody{"message": "Bad Request", "validation_error": "Content-Type must be application/json"})
	}
	upd, verr := parseUpdate(req.Body)
	if verr != "" {
		return jsonResponse(http.StatusBadRequest, errBody{"message": "Bad Request", "validation_error": verr})
	}
	if f != nil {
		switch {
		case f.Status != 0:
			return statusResponse(f)
		case f.Drop:
			return &response{drop: true}
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
	answer := map[string]any{
		"client_id":     c.id,
		"client_secret": append([]string{}, c.secrets...),
		"redirect_uris": append([]string{}, c.redirectURIs...),
		"name":          c.name,
		"webhook_uri":   c.webhookURI,
	}
	s.mu.Unlock()
	if f != nil {
		switch {
		case f.ApplyThenDrop:
			return &response{drop: true}
		case f.Body != nil:
			return &response{status: http.StatusOK, header: http.Header{"Content-Type": {"application/json"}}, body: f.Body}
		case f.Echo != nil:
			answer["client_secret"] = f.Echo
		}
	}
	return jsonResponse(http.StatusOK, answer)
}

// The documented 401 body.
var unauthorized = errBody{"error": "authentication_error", "message": "Your password is incorrect", "code": "incorrect_username_or_password"}

// maxBody is the largest request body accepted.
const maxBody = 1 << 20

type update struct {
	fields       map[string]json.RawMessage
	secrets      []string
	name         *string
	redirectURIs []string
	webhookSet   bool
	webhookURI   *string
}

// parseUpdate validates the body like the real API: one JSON object of at
// most 1 MiB, each key once, only the documented keys with their documented
// types, client_secret 1 to 10 distinct non-empty strings. It returns what
// it could parse (nil if the body is not a JSON object) and the validation
// error ("" if valid). Messages never echo values.
func parseUpdate(b []byte) (*update, string) {
	if len(b) > maxBody {
		return nil, "request body larger than 1 MiB"
	}
	if !utf8.Valid(b) {
		return nil, "request body is not valid UTF-8"
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&raw); err != nil || raw == nil {
		return nil, "request body must be a JSON object"
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, "request body must be a single JSON object"
	}
	u := &update{fields: raw}
	if k, dup := duplicateKey(b); dup {
		return u, "duplicate field " + strconv.Quote(truncate(k, 40))
	}
	keys := make([]string, 0, len(raw))
	for k := range raw {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := raw[k]
		switch k {
		case "client_secret":
			list, ok := stringList(v)
			if !ok {
				return u, "client_secret must be an array of strings"
			}
			u.secrets = list
		case "redirect_uris":
			list, ok := stringList(v)
			if !ok {
				return u, "redirect_uris must be an array of strings"
			}
			u.redirectURIs = list
		case "name":
			var n string
			if isNull(v) || json.Unmarshal(v, &n) != nil {
				return u, "name must be a string"
			}
			u.name = &n
		case "webhook_uri":
			u.webhookSet = true
			if !isNull(v) {
				var w string
				if err := json.Unmarshal(v, &w); err != nil {
					return u, "webhook_uri must be a string or null"
				}
				u.webhookURI = &w
			}
		default:
			return u, "unknown field " + strconv.Quote(truncate(k, 40))
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

func isNull(v json.RawMessage) bool { return string(bytes.TrimSpace(v)) == "null" }

// stringList decodes a JSON array of strings (no nulls).
func stringList(v json.RawMessage) ([]string, bool) {
	var ps []*string
	if isNull(v) || json.Unmarshal(v, &ps) != nil {
		return nil, false
	}
	out := make([]string, 0, len(ps))
	for _, p := range ps {
		if p == nil {
			return nil, false
		}
		out = append(out, *p)
	}
	return out, true
}

// duplicateKey reports a key that appears twice at the top level of the
// JSON object b (which is known to be valid).
func duplicateKey(b []byte) (string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return "", false
	}
	seen := map[string]bool{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return "", false
		}
		k, _ := t.(string)
		if seen[k] {
			return k, true
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return "", false
		}
	}
	return "", false
}

func truncate(s string, n int) string {
	if len(s) > n {
		return strings.ToValidUTF8(s[:n], "")
	}
	return s
}

// response is an answer decided but not yet sent; status 0 and no drop
// means nothing is sent (the client left).
type response struct {
	status int
	header http.Header
	body   []byte
	drop   bool // close the connection without answering
}

func jsonResponse(status int, body any) *response {
	b, err := json.Marshal(body)
	if err != nil {
		panic(err)
	}
	return &response{status: status, header: http.Header{"Content-Type": {"application/json"}}, body: append(b, '\n')}
}

func (r *response) write(w http.ResponseWriter) {
	switch {
	case r.drop:
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic(http.ErrAbortHandler) // net/http closes the stream without answering
		}
		if conn, _, err := hj.Hijack(); err == nil {
			_ = conn.Close()
		}
	case r.status != 0:
		for k, v := range r.header {
			w.Header()[k] = v
		}
		w.WriteHeader(r.status)
		_, _ = w.Write(r.body)
	}
}

func reply(w http.ResponseWriter, status int, body any) { jsonResponse(status, body).write(w) }

// statusResponse is the documented answer of a status.
func statusResponse(f *Fault) *response {
	var resp *response
	switch f.Status {
	case http.StatusBadRequest:
		resp = jsonResponse(f.Status, errBody{"message": "Bad Request", "validation_error": "injected validation error"})
	case http.StatusUnauthorized:
		resp = jsonResponse(f.Status, unauthorized)
	case http.StatusConflict:
		resp = jsonResponse(f.Status, errBody{"code": InjectedConflictCode, "token": InjectedConflictToken, "error": "conflict"})
	case http.StatusTooManyRequests:
		resp = jsonResponse(f.Status, errBody{"message": "Too Many Requests"})
	default:
		msg := http.StatusText(f.Status)
		if msg == "" {
			msg = "status " + strconv.Itoa(f.Status)
		}
		resp = jsonResponse(f.Status, errBody{"message": msg})
	}
	ra := f.RetryAfter
	if ra == "" && f.Status == http.StatusTooManyRequests {
		ra = "1"
	}
	if ra != "" {
		resp.header.Set("Retry-After", ra)
	}
	return resp
}

// The code and token of an injected 409's body (an authorization code and
// an access token in the real API): a client must never show them.
const (
	InjectedConflictCode  = "authcode-9f8e7d6c5b4a"
	InjectedConflictToken = "tok_injected-access-token-0123456789"
)

// describe names the fault for Request.Fault.
func (f *Fault) describe() string {
	var parts []string
	if f.Delay > 0 {
		parts = append(parts, "delay "+f.Delay.String())
	}
	switch {
	case f.Status != 0:
		parts = append(parts, "status "+strconv.Itoa(f.Status))
	case f.Drop:
		parts = append(parts, "drop")
	case f.ApplyThenDrop:
		parts = append(parts, "apply-then-drop")
	case f.Body != nil:
		parts = append(parts, "body")
	case f.ApplyEcho:
		parts = append(parts, "apply-echo")
	case f.Echo != nil:
		parts = append(parts, "echo")
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

// Fingerprint identifies a secret without revealing it: the first 12 hex
// digits of its SHA-256.
func Fingerprint(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])[:12]
}

// Fingerprints maps Fingerprint over secrets (never nil).
func Fingerprints(secrets []string) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, Fingerprint(s))
	}
	return out
}

// Sequence renders requests as "STATUS[A,B]" with each secret replaced by
// a label: "S0" for seed, "N1", "N2"… for the others in order of first
// appearance. Tests compare request histories this way without handling
// secret values.
func Sequence(reqs []Request, seed string) []string {
	names := map[string]string{seed: "S0"}
	out := make([]string, 0, len(reqs))
	for _, r := range reqs {
		parts := make([]string, 0, len(r.ClientSecret))
		for _, x := range r.ClientSecret {
			if _, ok := names[x]; !ok {
				names[x] = "N" + strconv.Itoa(len(names))
			}
			parts = append(parts, names[x])
		}
		out = append(out, strconv.Itoa(r.Status)+"["+strings.Join(parts, ",")+"]")
	}
	return out
}
