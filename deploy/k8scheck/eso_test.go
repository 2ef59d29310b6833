package k8scheck

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/affix-rotator/affix-rotator/internal/config"
)

// The External Secrets Operator's v1 API, reduced to the fields the
// examples of docs/examples/external-secrets use, with the JSON names and
// types of ESO's own Go types (apis/externalsecrets/v1: ExternalSecretSpec,
// SecretStoreRef, ExternalSecretTarget, ExternalSecretData,
// ExternalSecretDataRemoteRef, VaultProvider, VaultAuth,
// VaultKubernetesAuth, ServiceAccountSelector). ESO's module is not a
// dependency (it pulls in every provider's SDK) and its CRD schemas are not
// vendored, so this is a structural check, not validation against ESO's
// schema: a misspelt or misplaced field fails (strict decoding rejects
// unknown fields), an ESO field these structs leave out would fail too and
// must be added here with ESO's own name.
type (
	esoSecretStore struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			Provider struct {
				Vault *esoVaultProvider `json:"vault,omitempty"`
			} `json:"provider"`
		} `json:"spec"`
	}
	esoVaultProvider struct {
		Server    string  `json:"server"`
		Path      *string `json:"path,omitempty"`
		Version   string  `json:"version"`
		Namespace *string `json:"namespace,omitempty"`
		CABundle  []byte  `json:"caBundle,omitempty"`
		Auth      *struct {
			Kubernetes *struct {
				Path              string `json:"mountPath"`
				Role              string `json:"role"`
				ServiceAccountRef *struct {
					Name      string   `json:"name"`
					Namespace *string  `json:"namespace,omitempty"`
					Audiences []string `json:"audiences,omitempty"`
				} `json:"serviceAccountRef,omitempty"`
			} `json:"kubernetes,omitempty"`
		} `json:"auth,omitempty"`
	}
	esoExternalSecret struct {
		metav1.TypeMeta `json:",inline"`
		Metadata        metav1.ObjectMeta `json:"metadata"`
		Spec            struct {
			RefreshPolicy   string           `json:"refreshPolicy,omitempty"`
			RefreshInterval *metav1.Duration `json:"refreshInterval,omitempty"`
			SecretStoreRef  struct {
				Name string `json:"name,omitempty"`
				Kind string `json:"kind,omitempty"`
			} `json:"secretStoreRef,omitempty"`
			Target struct {
				Name           string `json:"name,omitempty"`
				CreationPolicy string `json:"creationPolicy,omitempty"`
				DeletionPolicy string `json:"deletionPolicy,omitempty"`
			} `json:"target,omitempty"`
			Data []struct {
				SecretKey string `json:"secretKey"`
				RemoteRef struct {
					Key      string `json:"key"`
					Property string `json:"property,omitempty"`
					Version  string `json:"version,omitempty"`
				} `json:"remoteRef"`
			} `json:"data,omitempty"`
		} `json:"spec"`
	}
)

// TestExternalSecretsExamples decodes the External Secrets Operator
// examples of docs/consumers.md strictly and checks what makes them work
// with the rotator's record: the SecretStore points at the KV v2 mount (not
// at secret/data), the ExternalSecret reads client_secret of the record
// the example config rotates, through that store, and refreshes well
// within the example config's grace.
func TestExternalSecretsExamples(t *testing.T) {
	var store esoSecretStore
	if err := decodeStrict(readRepoFile(t, "docs", "examples", "external-secrets", "secretstore.yaml"), &store); err != nil {
		t.Fatalf("secretstore.yaml: %v", err)
	}
	var es esoExternalSecret
	if err := decodeStrict(readRepoFile(t, "docs", "examples", "external-secrets", "externalsecret.yaml"), &es); err != nil {
		t.Fatalf("externalsecret.yaml: %v", err)
	}
	cfg, err := config.Parse(readRepoFile(t, "config.example.yaml"), "config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	client := cfg.Clients[0]

	if store.APIVersion != "external-secrets.io/v1" || store.Kind != "SecretStore" {
		t.Errorf("secretstore.yaml is %s %s", store.APIVersion, store.Kind)
	}
	v := store.Spec.Provider.Vault
	switch {
	case v == nil:
		t.Fatal("secretstore.yaml has no spec.provider.vault")
	case v.Path == nil || *v.Path != cfg.Vault.KVMount:
		t.Errorf("spec.provider.vault.path must be the KV mount %q (ESO adds data/), got %v", cfg.Vault.KVMount, v.Path)
	case v.Version != "v2":
		t.Errorf("spec.provider.vault.version %q, want v2 (the rotator's record is KV v2)", v.Version)
	case !strings.HasPrefix(v.Server, "https://"):
		t.Errorf("spec.provider.vault.server %q is not https", v.Server)
	case v.Auth == nil || v.Auth.Kubernetes == nil || v.Auth.Kubernetes.Role == "" || v.Auth.Kubernetes.Path == "":
		t.Error("spec.provider.vault.auth.kubernetes needs mountPath and role")
	}

	if es.APIVersion != "external-secrets.io/v1" || es.Kind != "ExternalSecret" {
		t.Errorf("externalsecret.yaml is %s %s", es.APIVersion, es.Kind)
	}
	ref := es.Spec.SecretStoreRef
	if ref.Name != store.Metadata.Name || ref.Kind != "SecretStore" || es.Metadata.Namespace != store.Metadata.Namespace {
		t.Errorf("secretStoreRef %s/%s in namespace %q does not name the SecretStore %s in %q", ref.Kind, ref.Name, es.Metadata.Namespace, store.Metadata.Name, store.Metadata.Namespace)
	}
	if len(es.Spec.Data) != 1 {
		t.Fatalf("want one data entry (client_secret), got %d", len(es.Spec.Data))
	}
	d := es.Spec.Data[0]
	if d.RemoteRef.Key != client.VaultPath || d.RemoteRef.Property != "client_secret" || d.SecretKey == "" {
		t.Errorf("data[0] reads %q property %q, want the record %q property client_secret (vault_path: relative to the mount, no data/)", d.RemoteRef.Key, d.RemoteRef.Property, client.VaultPath)
	}
	if es.Spec.RefreshPolicy != "" && es.Spec.RefreshPolicy != "Periodic" {
		t.Errorf("refreshPolicy %q: only Periodic picks up rotations", es.Spec.RefreshPolicy)
	}
	ri := es.Spec.RefreshInterval
	switch {
	case ri == nil || ri.Duration <= 0:
		t.Errorf("refreshInterval %v: a rotation is picked up only with a positive interval", ri)
	case ri.Duration+10*time.Minute >= client.GracePeriod.D():
		// 10 minutes: the restart time consumers.md takes as its example.
		t.Errorf("refreshInterval %s plus a restart does not fit in the example config's grace_period %s", ri.Duration, client.GracePeriod)
	}

	// The decoding is strict: a misspelt or misplaced field fails.
	for _, bad := range []string{
		"spec:\n  refreshIntreval: 1h\n",
		"spec:\n  data:\n    - secretKey: s\n      remoteRef: {key: affix/prod, proprety: client_secret}\n",
		"spec:\n  refreshinterval: 1h\n",
	} {
		if err := decodeStrict([]byte(bad), &esoExternalSecret{}); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
	if err := decodeStrict([]byte("spec:\n  provider:\n    vault: {server: s, version: v2, mountPath: secret}\n"), &esoSecretStore{}); err == nil {
		t.Error("a SecretStore with vault.mountPath (misplaced) was accepted")
	}
}
