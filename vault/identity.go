package vault

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// WhoAmI says who the store's Vault token is, for audit lines: the token's
// display name (e.g. "token-ops-alice", "approle",
// "kubernetes-affix-rotator-affix-rotator": mount, namespace, service
// account) and, when the token belongs to an identity entity, its id:
// "token-ops-alice (entity 4fd2…)"; a root token without an entity says so:
// "root (root token)". It never returns the token or its accessor.
func (s *Store) WhoAmI(ctx context.Context) (string, error) {
	start := time.Now()
	var sec *api.Secret
	err := s.once(ctx, "whoami", func() (err error) { sec, err = s.client.Auth().Token().LookupSelfWithContext(ctx); return err })
	if err != nil {
		return "", s.classifyAt("whoami", "auth/token/lookup-self", err, start)
	}
	s.observe("whoami", "ok", start, true)
	if sec == nil || sec.Data == nil {
		return "", fmt.Errorf("vault: whoami auth/token/lookup-self: empty response")
	}
	name, _ := sec.Data["display_name"].(string)
	entity, _ := sec.Data["entity_id"].(string)
	if name == "" {
		name = "unnamed token"
	}
	switch {
	case entity != "":
		return fmt.Sprintf("%s (entity %s)", name, entity), nil
	case hasRootPolicy(sec.Data["policies"]):
		return name + " (root token)", nil
	}
	return name, nil
}

// DataPath is the KV v2 API path of a record's data, as Vault policies
// spell it: "secret/data/affix/prod" for the record "affix/prod".
func (s *Store) DataPath(path string) string { return s.mount + "/data/" + path }

// MetadataPath is the KV v2 API path of a record's metadata, as Vault
// policies spell it: "secret/metadata/affix/prod" (the reconcile claim).
func (s *Store) MetadataPath(path string) string { return s.mount + "/metadata/" + path }

// Capabilities returns the store token's capabilities (sys/capabilities-self)
// on the data path of each record path given (DataPath: the path a policy
// must grant), keyed by the record path as given, e.g.
// {"affix/prod": ["read", "update"]}. A path the token has no access to maps
// to ["deny"]. Use HasCapability to test the result.
func (s *Store) Capabilities(ctx context.Context, paths ...string) (map[string][]string, error) {
	return s.capabilities(ctx, s.DataPath, paths)
}

// MetadataCapabilities is Capabilities on each record's metadata path
// (MetadataPath).
func (s *Store) MetadataCapabilities(ctx context.Context, paths ...string) (map[string][]string, error) {
	return s.capabilities(ctx, s.MetadataPath, paths)
}

func (s *Store) capabilities(ctx context.Context, at func(string) string, paths []string) (map[string][]string, error) {
	out := make(map[string][]string, len(paths))
	if len(paths) == 0 {
		return out, nil
	}
	full := make([]string, len(paths))
	for i, p := range paths {
		full[i] = at(p)
	}
	start := time.Now()
	var sec *api.Secret
	err := s.once(ctx, "capabilities", func() (err error) {
		sec, err = s.client.Logical().WriteWithContext(ctx, "sys/capabilities-self", map[string]any{"paths": full})
		return err
	})
	if err != nil {
		return nil, s.classifyAt("capabilities", "sys/capabilities-self", err, start)
	}
	s.observe("capabilities", "ok", start, true)
	if sec == nil || sec.Data == nil {
		return nil, fmt.Errorf("vault: capabilities sys/capabilities-self: empty response")
	}
	for i, p := range paths {
		caps, err := stringList(sec.Data[full[i]])
		if err != nil {
			return nil, fmt.Errorf("vault: capabilities of %s: %w", full[i], err)
		}
		if len(caps) == 0 && len(paths) == 1 {
			// Older servers answer a single path under "capabilities".
			if caps, err = stringList(sec.Data["capabilities"]); err != nil {
				return nil, fmt.Errorf("vault: capabilities of %s: %w", full[i], err)
			}
		}
		if len(caps) == 0 {
			caps = []string{"deny"}
		}
		out[p] = caps
	}
	return out, nil
}

// HasCapability reports whether caps (from Capabilities) grant want
// ("read", "create", "update", …): "root" grants everything, "deny"
// nothing.
func HasCapability(caps []string, want string) bool {
	if slices.Contains(caps, "deny") {
		return false
	}
	return slices.Contains(caps, "root") || slices.Contains(caps, want)
}

func stringList(v any) ([]string, error) {
	if v == nil {
		return nil, nil
	}
	l, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in the response", v)
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("unexpected %T in the response", e)
		}
		out = append(out, strings.TrimSpace(s))
	}
	return out, nil
}

func hasRootPolicy(v any) bool {
	l, _ := stringList(v)
	return slices.Contains(l, "root")
}
