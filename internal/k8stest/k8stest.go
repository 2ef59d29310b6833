// Package k8stest stands in for the Kubernetes API server's TokenReview
// endpoint (POST /apis/authentication.k8s.io/v1/tokenreviews) in tests, so
// that a real Vault's kubernetes auth method can log a "pod" in: it issues
// service account JWTs signed with its own ECDSA key, answers reviews of
// them as the API server would (authenticated, with the username
// system:serviceaccount:<namespace>:<name>, uid and groups; or not, with an
// error), and requires the reviewer's bearer token (Vault's
// token_reviewer_jwt) on every review. It serves HTTPS with a self-signed
// certificate; CACert is what Vault's kubernetes_ca_cert must hold.
package k8stest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/api"
)

// Issuer is the iss claim of the JWTs the server issues, as a cluster's
// API server would set it (--service-account-issuer).
const Issuer = "https://kubernetes.default.svc.cluster.local"

// Audience is the aud claim of the JWTs the server issues (a cluster's
// default API audience).
const Audience = "https://kubernetes.default.svc.cluster.local"

// ReviewPath is the TokenReview endpoint.
const ReviewPath = "/apis/authentication.k8s.io/v1/tokenreviews"

// Server is a running TokenReview endpoint.
type Server struct {
	URL         string // https://127.0.0.1:PORT, Vault's kubernetes_host
	CACert      string // PEM of the server's certificate, Vault's kubernetes_ca_cert
	ReviewerJWT string // the reviewer's token, Vault's token_reviewer_jwt

	srv *httptest.Server
	key *ecdsa.PrivateKey
	kid string

	mu      sync.Mutex
	revoked map[string]bool // sha256 of a JWT the API server no longer accepts
	reviews []Review
}

// Review is one TokenReview the server answered.
type Review struct {
	Reviewer      bool   // the request carried the reviewer's bearer token
	Authenticated bool   // status.authenticated
	Username      string // status.user.username, when authenticated
	Error         string // status.error, or why the request itself was refused
}

// Start starts a server; Close stops it.
func Start() (*Server, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("k8stest: signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("k8stest: public key: %w", err)
	}
	sum := sha256.Sum256(der)
	s := &Server{key: key, kid: hex.EncodeToString(sum[:8]), revoked: map[string]bool{}}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	s.CACert = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw}))
	if s.ReviewerJWT, err = s.Issue("kube-system", "vault-token-reviewer"); err != nil {
		s.srv.Close()
		return nil, err
	}
	return s, nil
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Issue returns a new projected service account token of the service
// account namespace/name, valid for an hour, as the kubelet mounts it in a
// pod at /var/run/secrets/kubernetes.io/serviceaccount/token.
func (s *Server) Issue(namespace, name string) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"iss": Issuer,
		"sub": "system:serviceaccount:" + namespace + ":" + name,
		"aud": []string{Audience},
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(time.Hour).Unix(),
		"jti": randomID(),
		"kubernetes.io": map[string]any{
			"namespace":      namespace,
			"pod":            map[string]any{"name": name + "-" + randomID()[:5], "uid": uid("pod", namespace, randomID())},
			"serviceaccount": map[string]any{"name": name, "uid": uid("sa", namespace, name)},
		},
	}
	return s.sign(claims)
}

// IssueForeign returns a well-formed service account token of
// namespace/name that this server did not sign (another cluster's): reviews
// of it are not authenticated.
func IssueForeign(namespace, name string) (string, error) {
	other, err := Start()
	if err != nil {
		return "", err
	}
	defer other.Close()
	return other.Issue(namespace, name)
}

// Revoke makes the server refuse jwt from now on, as the API server does
// once the pod or service account it is bound to is deleted.
func (s *Server) Revoke(jwt string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked[digest(jwt)] = true
}

// Reviews returns the reviews answered so far, oldest first.
func (s *Server) Reviews() []Review {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Review(nil), s.reviews...)
}

// EnableVaultAuth enables the kubernetes auth method at auth/<mount> of the
// Vault c talks to (a root client) and points it at this server, as an
// operator points it at a cluster's API server: kubernetes_host,
// kubernetes_ca_cert and token_reviewer_jwt. Roles are the caller's.
func (s *Server) EnableVaultAuth(ctx context.Context, c *api.Client, mount string) error {
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		return fmt.Errorf("k8stest: enable auth/%s: %w", mount, err)
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/config", map[string]any{
		"kubernetes_host":    s.URL,
		"kubernetes_ca_cert": s.CACert,
		"token_reviewer_jwt": s.ReviewerJWT,
	}); err != nil {
		return fmt.Errorf("k8stest: write auth/%s/config: %w", mount, err)
	}
	return nil
}

func (s *Server) sign(claims map[string]any) (string, error) {
	header, err := json.Marshal(map[string]string{"alg": "ES256", "kid": s.kid, "typ": "JWT"})
	if err != nil {
		return "", fmt.Errorf("k8stest: jwt header: %w", err)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("k8stest: jwt claims: %w", err)
	}
	input := b64(header) + "." + b64(payload)
	sum := sha256.Sum256([]byte(input))
	r, sv, err := ecdsa.Sign(rand.Reader, s.key, sum[:])
	if err != nil {
		return "", fmt.Errorf("k8stest: sign jwt: %w", err)
	}
	sig := make([]byte, 64) // ES256: r and s, 32 bytes each (RFC 7518 §3.4)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return input + "." + b64(sig), nil
}

// verify checks jwt's signature and time claims and returns its claims.
func (s *Server) verify(jwt string) (map[string]any, error) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWS compact serialization")
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return nil, errors.New("malformed signature")
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	r, sv := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(&s.key.PublicKey, sum[:], r, sv) {
		return nil, errors.New("invalid signature")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, errors.New("malformed claims")
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, errors.New("malformed claims")
	}
	if exp, _ := claims["exp"].(float64); time.Now().Unix() >= int64(exp) {
		return nil, errors.New("token has expired")
	}
	if claims["iss"] != Issuer {
		return nil, errors.New("unknown issuer")
	}
	return claims, nil
}

// tokenReview is the part of authentication.k8s.io/v1 TokenReview used here.
type tokenReview struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Spec       struct {
		Token     string   `json:"token"`
		Audiences []string `json:"audiences,omitempty"`
	} `json:"spec"`
	Status *reviewStatus `json:"status,omitempty"`
}

type reviewStatus struct {
	Authenticated bool      `json:"authenticated"`
	User          *userInfo `json:"user,omitempty"`
	Audiences     []string  `json:"audiences,omitempty"`
	Error         string    `json:"error,omitempty"`
}

type userInfo struct {
	Username string   `json:"username"`
	UID      string   `json:"uid"`
	Groups   []string `json:"groups"`
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != ReviewPath {
		status(w, http.StatusNotFound, "NotFound", "the server could not find the requested resource")
		return
	}
	if r.Method != http.MethodPost {
		status(w, http.StatusMethodNotAllowed, "MethodNotAllowed", "the server does not allow this method on the requested resource")
		return
	}
	bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(bearer), []byte(s.ReviewerJWT)) != 1 {
		s.record(Review{Error: "reviewer unauthorized"})
		status(w, http.StatusUnauthorized, "Unauthorized", "Unauthorized")
		return
	}
	var tr tokenReview
	// Vault sends no kind or apiVersion (the path says it); a client that
	// sends them must send these.
	err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&tr)
	if err != nil || (tr.Kind != "" && tr.Kind != "TokenReview") || tr.Spec.Token == "" {
		s.record(Review{Reviewer: true, Error: "bad request"})
		status(w, http.StatusBadRequest, "BadRequest", "the request body is not a TokenReview")
		return
	}
	tr.Status = s.review(tr.Spec.Token, tr.Spec.Audiences)
	rev := Review{Reviewer: true, Authenticated: tr.Status.Authenticated, Error: tr.Status.Error}
	if tr.Status.User != nil {
		rev.Username = tr.Status.User.Username
	}
	s.record(rev)
	tr.APIVersion, tr.Kind = "authentication.k8s.io/v1", "TokenReview"
	tr.Spec.Token = "" // the API server does not echo the token back
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(tr)
}

// review answers as the API server's service account token authenticator.
func (s *Server) review(jwt string, wantAud []string) *reviewStatus {
	const invalid = "[invalid bearer token, service account token is not valid]"
	claims, err := s.verify(jwt)
	if err != nil {
		return &reviewStatus{Error: invalid}
	}
	s.mu.Lock()
	revoked := s.revoked[digest(jwt)]
	s.mu.Unlock()
	if revoked {
		return &reviewStatus{Error: "[invalid bearer token, service account token has been invalidated]"}
	}
	var tokenAud []string
	if list, ok := claims["aud"].([]any); ok {
		for _, a := range list {
			if a, ok := a.(string); ok {
				tokenAud = append(tokenAud, a)
			}
		}
	}
	aud := tokenAud
	if len(wantAud) > 0 {
		aud = nil
		for _, a := range wantAud {
			for _, t := range tokenAud {
				if a == t {
					aud = append(aud, a)
				}
			}
		}
		if len(aud) == 0 {
			return &reviewStatus{Error: "[invalid bearer token, token audiences are invalid for the target audiences]"}
		}
	}
	k8s, _ := claims["kubernetes.io"].(map[string]any)
	ns, _ := k8s["namespace"].(string)
	sa, _ := k8s["serviceaccount"].(map[string]any)
	name, _ := sa["name"].(string)
	saUID, _ := sa["uid"].(string)
	if ns == "" || name == "" {
		return &reviewStatus{Error: invalid}
	}
	return &reviewStatus{
		Authenticated: true,
		User: &userInfo{
			Username: "system:serviceaccount:" + ns + ":" + name,
			UID:      saUID,
			Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
		},
		Audiences: aud,
	}
}

func (s *Server) record(r Review) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reviews = append(s.reviews, r)
}

// status writes a metav1.Status failure, as the API server does.
func status(w http.ResponseWriter, code int, reason, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
		"status": "Failure", "message": message, "reason": reason, "code": code,
	})
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func digest(s string) string {
	sum := sha256.Sum256([]byte(s))
	return string(sum[:])
}

func randomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// uid derives a stable UID-shaped string, so that a service account keeps its
// uid across the tokens issued for it.
func uid(parts ...string) string {
	sum := sha256.Sum256([]byte(strings.Join(parts, "/")))
	h := hex.EncodeToString(sum[:16])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}
