// Package vaultapi_test is the Vault API example of docs/consumers.md: an
// application that reads its Affix client_secret from Vault itself, with
// github.com/hashicorp/vault/api, instead of through Vault Agent or External
// Secrets. `go test ./docs/examples/vault-api` compiles and runs it against
// a real Vault dev server, logging in with AppRole as the consumer policy
// allows.
package vaultapi_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/hashicorp/vault/api"
	"github.com/hashicorp/vault/api/auth/approle"
)

// clientSecret reads the current client_secret of the Affix client "prod":
// the record affix/prod on the KV v2 mount "secret" (the API path
// secret/data/affix/prod; the KVv2 helper adds data/). It reads that field
// and nothing else: the record's other fields are the rotator's state.
func clientSecret(ctx context.Context, client *api.Client) (string, error) {
	s, err := client.KVv2("secret").Get(ctx, "affix/prod")
	if err != nil {
		return "", fmt.Errorf("vault: read secret/affix/prod: %w", err)
	}
	v, ok := s.Data["client_secret"].(string)
	if !ok || v == "" {
		return "", errors.New("vault: secret/affix/prod has no client_secret")
	}
	return v, nil
}

// login logs in with AppRole: the role id is not a secret (configuration),
// the secret id is read from a file only the application can read.
func login(ctx context.Context, client *api.Client, roleID, secretIDFile string) error {
	auth, err := approle.NewAppRoleAuth(roleID, &approle.SecretID{FromFile: secretIDFile})
	if err != nil {
		return fmt.Errorf("vault: approle: %w", err)
	}
	s, err := client.Auth().Login(ctx, auth)
	if err != nil {
		return fmt.Errorf("vault: approle login: %w", err)
	}
	if s == nil || s.Auth == nil {
		return errors.New("vault: approle login returned no token")
	}
	// A long-running application keeps its token alive with
	// client.NewLifetimeWatcher(&api.LifetimeWatcherInput{Secret: s}) and
	// logs in again when the watcher says the token is done.
	return nil
}

// Example reads the secret the way an application should: at start, again
// at least every refresh interval (the interval that counts against the
// rotator's grace_period), and at once when Affix answers 401, retrying the
// request once with what Vault holds then.
func Example() {
	ctx := context.Background()
	// VAULT_ADDR, VAULT_CACERT, VAULT_NAMESPACE… come from the environment.
	client, err := api.NewClient(api.DefaultConfig())
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := login(ctx, client, os.Getenv("MY_APP_ROLE_ID"), filepath.Join(os.Getenv("MY_APP_DIR"), "vault-secret-id")); err != nil {
		fmt.Println(err)
		return
	}
	secret, err := clientSecret(ctx, client)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Use secret as the Affix client_secret; never log it.
	fmt.Println("client_secret read:", secret != "")
	// Output: client_secret read: true
}
