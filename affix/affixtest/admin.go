package affixtest

import (
	"encoding/json"
	"io"
	"net/http"
	"time"
)

// AdminPrefix is where AdminHandler serves: test-only endpoints of the
// process mode, for chaos tests and the local demo.
const AdminPrefix = "/_affixtest/"

// wireFault is a Fault as JSON, with the delay as a Go duration string.
type wireFault struct {
	Fault
	Delay string `json:"delay,omitempty"`
}

type stateRequest struct {
	Time         time.Time `json:"time"`
	Status       int       `json:"status"`
	Fault        string    `json:"fault,omitempty"`
	Applied      bool      `json:"applied"`
	ClientSecret []string  `json:"client_secret"` // fingerprints
}

// AdminHandler serves, for the first registered client (the process mode
// registers one):
//
//	GET  /_affixtest/state     {"client_id", "accepted": [fingerprints], "requests": [...]}
//	POST /_affixtest/faults    a JSON array of faults to queue (delay as "1.5s")
//	POST /_affixtest/accepted  {"secret": "…"} → {"accepted": bool}
//
// Secrets appear only as Fingerprints.
func (s *Server) AdminHandler(apiKey string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+AdminPrefix+"state", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		id := ""
		if c, ok := s.clients[apiKey]; ok {
			id = c.id
		}
		s.mu.Unlock()
		out := map[string]any{"client_id": id, "accepted": fingerprints(s.Secrets(apiKey))}
		var reqs []stateRequest
		for _, r := range s.Requests() {
			reqs = append(reqs, stateRequest{Time: r.Time, Status: r.Status, Fault: r.Fault, Applied: r.Applied, ClientSecret: fingerprints(r.ClientSecret)})
		}
		out["requests"] = reqs
		reply(w, 200, out)
	})
	mux.HandleFunc("POST "+AdminPrefix+"faults", func(w http.ResponseWriter, r *http.Request) {
		var in []wireFault
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in); err != nil {
			reply(w, 400, errBody{"message": "want a JSON array of faults"})
			return
		}
		var fs []Fault
		for _, wf := range in {
			f := wf.Fault
			if wf.Delay != "" {
				d, err := time.ParseDuration(wf.Delay)
				if err != nil {
					reply(w, 400, errBody{"message": "bad delay"})
					return
				}
				f.Delay = d
			}
			fs = append(fs, f)
		}
		s.Inject(fs...)
		reply(w, 200, map[string]int{"queued": len(fs)})
	})
	mux.HandleFunc("POST "+AdminPrefix+"accepted", func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			Secret string `json:"secret"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&in); err != nil {
			reply(w, 400, errBody{"message": "want {\"secret\": …}"})
			return
		}
		reply(w, 200, map[string]bool{"accepted": s.Accepts(apiKey, in.Secret)})
	})
	return mux
}

// Mux serves the API and the admin endpoints on one listener.
func (s *Server) Mux(apiKey string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(AdminPrefix, s.AdminHandler(apiKey))
	mux.Handle("/", s.Handler())
	return mux
}

func fingerprints(secrets []string) []string {
	out := make([]string, 0, len(secrets))
	for _, s := range secrets {
		out = append(out, Fingerprint(s))
	}
	return out
}
