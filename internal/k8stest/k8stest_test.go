package k8stest_test

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/affix-rotator/affix-rotator/internal/k8stest"
)

// reviewAnswer is a TokenReview answer or, with Kind "Status", a refusal.
type reviewAnswer struct {
	Kind   string          `json:"kind"`
	Reason string          `json:"reason"`
	Raw    json.RawMessage `json:"status"`
	Status struct {
		Authenticated bool `json:"authenticated"`
		User          struct {
			Username string   `json:"username"`
			UID      string   `json:"uid"`
			Groups   []string `json:"groups"`
		} `json:"user"`
		Audiences []string `json:"audiences"`
		Error     string   `json:"error"`
	} `json:"-"`
}

// post sends a TokenReview of token with bearer as the reviewer, over TLS
// trusting only the server's CACert (as Vault does with kubernetes_ca_cert).
func post(t *testing.T, s *k8stest.Server, path, bearer, token string, aud []string) (int, reviewAnswer) {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.CACert)) {
		t.Fatal("CACert holds no certificate")
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	body, _ := json.Marshal(map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": map[string]any{"token": token, "audiences": aud}})
	req, _ := http.NewRequest(http.MethodPost, s.URL+path, bytes.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a reviewAnswer
	if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
		t.Fatalf("decode answer: %v", err)
	}
	if a.Kind == "TokenReview" {
		if err := json.Unmarshal(a.Raw, &a.Status); err != nil {
			t.Fatalf("decode status: %v", err)
		}
	}
	return resp.StatusCode, a
}

// TestKubernetesTokenReview: the server authenticates the service account
// tokens it issued (with the username, uid and groups of the real API
// server), refuses revoked and foreign ones, and answers only the reviewer.
func TestKubernetesTokenReview(t *testing.T) {
	s, err := k8stest.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	jwt, err := s.Issue("affix-rotator", "affix-rotator")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(jwt, "."); n != 2 {
		t.Fatalf("JWT has %d dots", n)
	}

	code, a := post(t, s, k8stest.ReviewPath, s.ReviewerJWT, jwt, []string{k8stest.Audience})
	if code != http.StatusCreated || !a.Status.Authenticated || a.Status.User.Username != "system:serviceaccount:affix-rotator:affix-rotator" ||
		a.Status.User.UID == "" || len(a.Status.User.Groups) != 3 || len(a.Status.Audiences) != 1 {
		t.Fatalf("review of an issued token: %d %+v", code, a)
	}
	again, _ := s.Issue("affix-rotator", "affix-rotator")
	if _, b := post(t, s, k8stest.ReviewPath, s.ReviewerJWT, again, nil); b.Status.User.UID != a.Status.User.UID {
		t.Fatal("a service account's uid changed between tokens")
	}
	if _, a := post(t, s, k8stest.ReviewPath, s.ReviewerJWT, jwt, []string{"vault"}); a.Status.Authenticated || !strings.Contains(a.Status.Error, "audiences") {
		t.Fatalf("review for another audience: %+v", a)
	}

	foreign, err := k8stest.IssueForeign("affix-rotator", "affix-rotator")
	if err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"foreign": foreign, "garbage": "not-a-jwt", "tampered": jwt[:len(jwt)-4] + "AAAA"} {
		if code, a := post(t, s, k8stest.ReviewPath, s.ReviewerJWT, tok, nil); code != http.StatusCreated || a.Status.Authenticated || a.Status.Error == "" {
			t.Fatalf("%s token: %d %+v", name, code, a)
		}
	}
	s.Revoke(jwt)
	if _, a := post(t, s, k8stest.ReviewPath, s.ReviewerJWT, jwt, nil); a.Status.Authenticated || !strings.Contains(a.Status.Error, "invalidated") {
		t.Fatalf("revoked token: %+v", a)
	}

	// The reviewer must authenticate (Vault's token_reviewer_jwt).
	for name, bearer := range map[string]string{"no bearer": "", "service account as reviewer": again} {
		if code, a := post(t, s, k8stest.ReviewPath, bearer, again, nil); code != http.StatusUnauthorized || a.Kind != "Status" || a.Reason != "Unauthorized" {
			t.Fatalf("%s: %d %+v", name, code, a)
		}
	}
	if code, _ := post(t, s, "/api/v1/namespaces", s.ReviewerJWT, again, nil); code != http.StatusNotFound {
		t.Fatalf("other path: %d", code)
	}
	revs := s.Reviews()
	if len(revs) != 9 || !revs[0].Authenticated || revs[7].Reviewer || revs[8].Reviewer {
		t.Fatalf("reviews recorded: %+v", revs)
	}
	for _, r := range revs {
		if strings.Contains(r.Error, jwt) || strings.Contains(r.Username, jwt) {
			t.Fatal("a review record holds the token")
		}
	}

}
