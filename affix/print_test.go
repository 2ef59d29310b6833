package affix_test

import (
	"testing"

	"github.com/affix-rotator/affix-rotator/affix"
	"github.com/affix-rotator/affix-rotator/internal/secret"
	"github.com/affix-rotator/affix-rotator/internal/secret/secrettest"
)

// TestClientPrintsNoKey walks the client, which holds the API key in an
// unexported field, and a request holding secrets through every printer.
func TestClientPrintsNoKey(t *testing.T) {
	const key, s1 = "APIKEY-must-never-print-91b2", "client-secret-must-never-print"
	c, err := affix.New("https://api.example", secret.New(key))
	if err != nil {
		t.Fatal(err)
	}
	req := affix.UpdateRequest{ClientSecret: []secret.Value{secret.New(s1)}}
	resp := affix.UpdateResponse{ClientID: "cid", ClientSecret: req.ClientSecret}
	type holder struct {
		c   *affix.Client
		req affix.UpdateRequest
	}
	for name, v := range map[string]any{"*Client": c, "Client": *c, "UpdateRequest": req, "UpdateResponse": resp, "holder": holder{c, req}, "*holder": &holder{c, req}} {
		secrettest.AssertNotPrinted(t, name, v, key, s1)
	}
}
