package vault

import (
	"fmt"
	"net/http"
)

// sameOrigin refuses a redirect to another origin (scheme and host): the
// Vault library follows one redirect itself and sends it the token and the
// request body again. Its own check only refuses https to http. A redirect
// to the same origin (a standby node's path, say) is still followed by
// the library.
type sameOrigin struct{ next http.RoundTripper }

// RoundTrip implements http.RoundTripper.
func (s sameOrigin) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	switch resp.StatusCode {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
	default:
		return resp, nil
	}
	loc, lerr := resp.Location()
	if lerr != nil || loc.Scheme == req.URL.Scheme && loc.Host == req.URL.Host {
		return resp, nil
	}
	_ = resp.Body.Close()
	// The target's host is named, never its path or query (they could
	// hold anything), nor user info.
	return nil, fmt.Errorf("vault answered %d with a redirect to another host (%s://%s): not followed, so that the token stays with %s://%s", resp.StatusCode, loc.Scheme, loc.Host, req.URL.Scheme, req.URL.Host)
}
