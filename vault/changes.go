package vault

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/api"
)

// ChangesPath is the change marker's path, relative to the KV mount
// (docs/design.md, "The change marker"): every operator command and -once
// writes a version of it after it changed a client's record, and every
// daemon reads its version once per rotation.reread_interval, so that a
// stable client's record, otherwise read every 10 × reread_interval, is
// read again at once after such a change. It holds no secret.
const ChangesPath = "affix-rotator/changes"

// ChangesVersion returns the change marker's current version (0 when it
// was never written).
func (s *Store) ChangesVersion(ctx context.Context) (int, error) {
	start := time.Now()
	kvs, err := s.kv.Get(ctx, ChangesPath)
	if errors.Is(err, api.ErrSecretNotFound) {
		s.observe("read_changes", "not_found", start, true)
		return 0, nil
	}
	if err != nil {
		return 0, s.classify("read_changes", ChangesPath, err, start)
	}
	s.observe("read_changes", "ok", start, true)
	if kvs == nil || kvs.VersionMetadata == nil {
		return 0, nil
	}
	return kvs.VersionMetadata.Version, nil
}

// BumpChanges writes a new version of the change marker saying which
// client changed and how (no secret): daemons read the client's record
// again within rotation.reread_interval.
func (s *Store) BumpChanges(ctx context.Context, client, what string) error {
	start := time.Now()
	_, err := s.kv.Put(ctx, ChangesPath, map[string]any{"client": client, "change": what, "at": time.Now().UTC().Format(time.RFC3339Nano)})
	if err != nil {
		return s.classify("write_changes", ChangesPath, err, start)
	}
	s.observe("write_changes", "ok", start, true)
	return nil
}
