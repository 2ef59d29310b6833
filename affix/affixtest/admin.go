package affixtest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// AdminPrefix is where AdminHandler serves: test-only endpoints of the
// process mode, for chaos tests and the local demo.
const AdminPrefix = "/_affixtest/"

// faultWire is a Fault on the wire: snake_case keys, the delay as a Go
// duration string, the body as a string (body) or base64 (body_base64).
type faultWire struct {
	Status        int      `json:"status,omitempty"`
	RetryAfter    string   `json:"retry_after,omitempty"`
	Delay         string   `json:"delay,omitempty"`
	Drop          bool     `json:"drop,omitempty"`
	ApplyThenDrop bool     `json:"apply_then_drop,omitempty"`
	Echo          []string `json:"echo,omitempty"`
	ApplyEcho     bool     `json:"apply_echo,omitempty"`
	Body          *string  `json:"body,omitempty"`
	BodyBase64    *string  `json:"body_base64,omitempty"`
}

// MarshalJSON renders f as POST /_affixtest/faults takes it:
// {"status", "retry_after", "delay" ("1.5s"), "drop", "apply_then_drop",
// "echo", "apply_echo", "body"} with the body as a string, or as
// "body_base64" when it is not valid UTF-8.
func (f Fault) MarshalJSON() ([]byte, error) {
	w := faultWire{Status: f.Status, RetryAfter: f.RetryAfter, Drop: f.Drop, ApplyThenDrop: f.ApplyThenDrop, Echo: f.Echo, ApplyEcho: f.ApplyEcho}
	if f.Delay != 0 {
		w.Delay = f.Delay.String()
	}
	if f.Body != nil {
		if utf8.Valid(f.Body) {
			s := string(f.Body)
			w.Body = &s
		} else {
			s := base64.StdEncoding.EncodeToString(f.Body)
			w.BodyBase64 = &s
		}
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the form MarshalJSON writes. Keys may also be
// spelled like the Go fields ("RetryAfter", "ApplyThenDrop"); case,
// underscores and dashes are ignored. Unknown keys are an error.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil || raw == nil {
		return errors.New("a fault must be a JSON object")
	}
	canon := map[string]string{}
	for _, k := range []string{"status", "retry_after", "delay", "drop", "apply_then_drop", "echo", "apply_echo", "body", "body_base64"} {
		canon[normKey(k)] = k
	}
	norm := map[string]json.RawMessage{}
	for k, v := range raw {
		c, ok := canon[normKey(k)]
		if !ok {
			return fmt.Errorf("unknown fault field %q", k)
		}
		if _, dup := norm[c]; dup {
			return fmt.Errorf("fault field %q given twice", c)
		}
		norm[c] = v
	}
	nb, _ := json.Marshal(norm)
	var w faultWire
	dec := json.NewDecoder(bytes.NewReader(nb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("bad fault: %w", err)
	}
	out := Fault{Status: w.Status, RetryAfter: w.RetryAfter, Drop: w.Drop, ApplyThenDrop: w.ApplyThenDrop, Echo: w.Echo, ApplyEcho: w.ApplyEcho}
	if w.Status != 0 && (w.Status < 100 || w.Status > 999) {
		return fmt.Errorf("bad fault status %d", w.Status)
	}
	if w.Delay != "" {
		d, err := time.ParseDuration(w.Delay)
		if err != nil || d < 0 {
			return fmt.Errorf("bad fault delay %q (want a Go duration such as \"1.5s\")", w.Delay)
		}
		out.Delay = d
	}
	switch {
	case w.Body != nil && w.BodyBase64 != nil:
		return errors.New("give body or body_base64, not both")
	case w.Body != nil:
		out.Body = []byte(*w.Body)
	case w.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*w.BodyBase64)
		if err != nil {
			return errors.New("body_base64 is not base64")
		}
		out.Body = b
	}
	*f = out
	return nil
}

func normKey(k string) string {
	return strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(k))
}

// State is what GET /_affixtest/state answers. Secrets appear only as
// Fingerprints.
type State struct {
	ClientID      string         `json:"client_id"`
	Accepted      []string       `json:"accepted"`       // fingerprints, in the order last sent
	PendingFaults int            `json:"pending_faults"` // queued faults not yet consumed
	Requests      []StateRequest `json:"requests"`       // in arrival order
	// Authentications counts the client's authentications at TokenPath
	// (the consumer stand-in, not an Affix endpoint).
	Authentications Auths `json:"authentications"`
}

// StateRequest is one request in a State.
type StateRequest struct {
	Time         time.Time `json:"time"`
	Method       string    `json:"method"`
	Path         string    `json:"path"`
	Status       int       `json:"status"` // 0: dropped
	Fault        string    `json:"fault,omitempty"`
	Applied      bool      `json:"applied"`
	ClientSecret []string  `json:"client_secret"` // fingerprints
	Fields       []string  `json:"fields"`        // the body's top-level keys, sorted
}

// State returns what GET /_affixtest/state shows for apiKey's client.
func (s *Server) State(apiKey string) State {
	id := s.ClientID(apiKey)
	st := State{ClientID: id, Accepted: Fingerprints(s.Secrets(apiKey)), PendingFaults: s.Pending(), Requests: []StateRequest{}}
	if id != "" {
		st.Authentications = s.Authentications(id)
	}
	for _, r := range s.Requests() {
		fields := make([]string, 0, len(r.Fields))
		for k := range r.Fields {
			fields = append(fields, k)
		}
		sort.Strings(fields)
		st.Requests = append(st.Requests, StateRequest{
			Time: r.Time, Method: r.Method, Path: r.Path, Status: r.Status, Fault: r.Fault,
			Applied: r.Applied, ClientSecret: Fingerprints(r.ClientSecret), Fields: fields,
		})
	}
	return st
}

// AdminHandler serves the test-only endpoints for apiKey's client (the
// process mode registers one):
//
//	GET  /_affixtest/state     State: {"client_id", "accepted": [fingerprints], "pending_faults", "requests": [...], "authentications": {"accepted", "refused"}}
//	POST /_affixtest/faults    a JSON array of faults to queue (see Fault.UnmarshalJSON) → {"queued": n}
//	POST /_affixtest/accepted  {"secret": "…"} → {"accepted": bool}
//
// Secrets appear only as Fingerprints. Bad input gets a 400 {"message"}.
func (s *Server) AdminHandler(apiKey string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"state", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusOK, s.State(apiKey))
	})
	mux.HandleFunc("POST "+AdminPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		var fs []Fault
		if err := decodeStrict(r.Body, &fs); err != nil || fs == nil {
			msg := "want a JSON array of faults"
			if err != nil {
				msg += ": " + err.Error()
			}
			reply(w, http.StatusBadRequest, errBody{"message": msg})
			return
		}
		s.Inject(fs...)
		reply(w, http.StatusOK, map[string]int{"queued": len(fs)})
	})
	mux.HandleFunc("POST "+AdminPrefix+"accepted", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Secret *string `json:"secret"`
		}
		if err := decodeStrict(r.Body, &in); err != nil || in.Secret == nil {
			reply(w, http.StatusBadRequest, errBody{"message": `want {"secret": "…"}`})
			return
		}
		reply(w, http.StatusOK, map[string]bool{"accepted": s.Accepts(apiKey, *in.Secret)})
	})
	for path, allow := range map[string]string{"state": http.MethodGet, "faults": http.MethodPost, "accepted": http.MethodPost} {
		mux.HandleFunc(AdminPrefix+path, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Allow", allow)
			reply(w, http.StatusMethodNotAllowed, errBody{"message": "use " + allow})
		})
	}
	mux.HandleFunc(AdminPrefix, func(w http.ResponseWriter, _ *http.Request) {
		reply(w, http.StatusNotFound, errBody{"message": "no such admin endpoint"})
	})
	return mux
}

// decodeStrict decodes exactly one JSON value of at most 1 MiB into v.
func decodeStrict(r io.Reader, v any) error {
	dec := json.NewDecoder(io.LimitReader(r, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// Mux serves the API and the consumer stand-in (Handler) and the admin
// endpoints (AdminHandler) on one listener, as the process mode does.
func (s *Server) Mux(apiKey string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(TokenPath, s.Handler())
	mux.Handle(AdminPrefix, s.AdminHandler(apiKey))
	mux.Handle("/", s.Handler())
	return mux
}
