package affixtest

import (
	"crypto/subtle"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
)

// TokenPath is where the fake serves its consumer stand-in: an OAuth 2.0
// client-credentials token request (RFC 6749 §4.4) that answers 200 exactly
// when the client_secret sent is one the fake accepts for that client_id
// right now, and 401 invalid_client otherwise.
//
// It is NOT part of Affix's API: the "Update client" page the fake follows
// documents no such endpoint, and how an application really uses its client
// id and secret with Affix (an authorization-code exchange) is not modelled.
// It exists so that tests and the bench can check, from a consumer's side,
// that the secret a consumer holds is accepted at the moment it uses it: the
// same check as Accepts, made over HTTP by a process that knows only its
// client id and secret. The path is under AdminPrefix so that it cannot be
// mistaken for an Affix endpoint.
//
// The request: POST, Content-Type application/x-www-form-urlencoded, the body
// grant_type=client_credentials, and the client's credentials either in an
// HTTP Basic Authorization header (client_id:client_secret, each
// form-urlencoded first, RFC 6749 §2.3.1) or as client_id and client_secret
// in the body, not both. The answers:
//
//	200 {"access_token": "affixtest-token-N", "token_type": "Bearer", "expires_in": 3600}
//	401 {"error": "invalid_client"}            unknown client_id or a secret not accepted now (+ WWW-Authenticate with Basic)
//	400 {"error": "invalid_request"}           no credentials, both methods, a malformed body or header
//	400 {"error": "unsupported_grant_type"}    grant_type is not client_credentials
//	405                                        not a POST
//
// The access token is a dummy (it grants nothing and is never checked).
// Every 200 and 401 is counted per client_id presented (Authentications);
// token requests are not listed in Requests, do not consume injected faults
// and are not rate limited: they are the consumers' traffic, not the
// rotator's.
const TokenPath = AdminPrefix + "oauth/token"

// Auths counts a client's authentications at TokenPath.
type Auths struct {
	// Accepted is the number of 200s: the secret sent was accepted.
	Accepted int `json:"accepted"`
	// Refused is the number of 401 invalid_client answers: an unknown
	// client_id, or a secret the client does not accept now.
	Refused int `json:"refused"`
}

// Authentications returns the counts of authentications at TokenPath that
// presented clientID (all zero if none did).
func (s *Server) Authentications(clientID string) Auths {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.auths[clientID]; a != nil {
		return *a
	}
	return Auths{}
}

// authenticate reports whether secret is accepted now for the client whose
// client_id is clientID, counts the decision, and numbers the token of an
// accepted one.
func (s *Server) authenticate(clientID, secret string) (ok bool, token int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.clients {
		if c.id != clientID || clientID == "" {
			continue
		}
		for _, x := range c.secrets {
			if secret != "" && subtle.ConstantTimeCompare([]byte(x), []byte(secret)) == 1 {
				ok = true
			}
		}
	}
	if s.auths == nil {
		s.auths = map[string]*Auths{}
	}
	a := s.auths[clientID]
	if a == nil {
		a = &Auths{}
		s.auths[clientID] = a
	}
	if !ok {
		a.Refused++
		return false, 0
	}
	a.Accepted++
	s.tokens++
	return true, s.tokens
}

// serveToken answers a request to TokenPath (see there).
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		reply(w, http.StatusMethodNotAllowed, errBody{"error": "invalid_request", "error_description": "use POST"})
		return
	}
	bad := func(code, why string) {
		reply(w, http.StatusBadRequest, errBody{"error": code, "error_description": why})
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		bad("invalid_request", "Content-Type must be application/x-www-form-urlencoded")
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		bad("invalid_request", "unreadable or too large body")
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		bad("invalid_request", "the body is not form-urlencoded")
		return
	}
	for k, v := range form {
		if len(v) > 1 {
			bad("invalid_request", "parameter "+strconv.Quote(truncate(k, 40))+" given more than once")
			return
		}
	}
	if form.Get("grant_type") != "client_credentials" {
		if form.Get("grant_type") == "" {
			bad("invalid_request", "grant_type is required")
		} else {
			bad("unsupported_grant_type", "only client_credentials is served")
		}
		return
	}
	id, secret, basic := r.BasicAuth()
	inBody := form.Has("client_id") || form.Has("client_secret")
	switch {
	case basic && inBody:
		bad("invalid_request", "give the client credentials in the Authorization header or in the body, not both")
		return
	case basic:
		// RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		if e1 != nil || e2 != nil {
			bad("invalid_request", "the Basic credentials are not form-urlencoded")
			return
		}
	case inBody:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	case r.Header.Get("Authorization") != "":
		bad("invalid_request", "the Authorization header is not HTTP Basic")
		return
	default:
		bad("invalid_request", "no client credentials")
		return
	}
	ok, n := s.authenticate(id, secret)
	if !ok {
		if basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="affixtest"`)
		}
		reply(w, http.StatusUnauthorized, errBody{"error": "invalid_client"})
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	reply(w, http.StatusOK, map[string]any{"access_token": "affixtest-token-" + strconv.Itoa(n), "token_type": "Bearer", "expires_in": 3600})
}
