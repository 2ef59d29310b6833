package vault

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/hashicorp/vault/api"
)

// Version states of a VersionError.
const (
	// VersionDeleted: soft-deleted (`vault kv delete`); `vault kv undelete` restores it.
	VersionDeleted = "deleted"
	// VersionDestroyed: destroyed (`vault kv destroy`); its data is gone for good.
	VersionDestroyed = "destroyed"
	// VersionAbsent: never written, or no longer kept (the mount's or the
	// record's max_versions pruned it).
	VersionAbsent = "absent"
)

// VersionError says why one version of a record cannot be read. It wraps
// ErrNotFound, so errors.Is(err, ErrNotFound) holds.
type VersionError struct {
	Path    string // the record's path as shown to people, e.g. "secret/affix/prod"
	Version int
	State   string // VersionDeleted, VersionDestroyed or VersionAbsent
}

func (e *VersionError) Error() string {
	switch e.State {
	case VersionDeleted:
		return fmt.Sprintf("vault: version %d of %s is deleted: %v (restore it with `vault kv undelete -versions=%d %s`)", e.Version, e.Path, ErrNotFound, e.Version, e.Path)
	case VersionDestroyed:
		return fmt.Sprintf("vault: version %d of %s is destroyed: %v (its data cannot be recovered)", e.Version, e.Path, ErrNotFound)
	default:
		return fmt.Sprintf("vault: version %d of %s does not exist: %v (never written, or no longer kept: see max_versions in `vault kv metadata get %s`)", e.Version, e.Path, ErrNotFound, e.Path)
	}
}

// Unwrap makes a VersionError an ErrNotFound.
func (e *VersionError) Unwrap() error { return ErrNotFound }

// ReadVersion returns one version of the record at path from its KV v2
// history (version >= 1), e.g. to find the secret a rotation replaced. A
// version that is deleted, destroyed or no longer kept is a *VersionError
// (an ErrNotFound); a version that does not decode is a *MalformedError
// whose Path names the version.
func (s *Store) ReadVersion(ctx context.Context, path string, version int) (Record, error) {
	if version < 1 {
		return Record{}, fmt.Errorf("vault: read %s version %d: versions start at 1", s.Path(path), version)
	}
	start := time.Now()
	var kvs *api.KVSecret
	err := s.once(ctx, "read_version", func() (err error) { kvs, err = s.kv.GetVersion(ctx, path, version); return err })
	if err != nil {
		if errors.Is(err, api.ErrSecretNotFound) {
			s.observe("read_version", "not_found", start, true)
			return Record{}, &VersionError{Path: s.Path(path), Version: version, State: VersionAbsent}
		}
		return Record{}, s.classify("read_version", path, err, start)
	}
	if kvs.Data == nil {
		s.observe("read_version", "not_found", start, true)
		state := VersionAbsent
		if md := kvs.VersionMetadata; md != nil {
			switch {
			case md.Destroyed:
				state = VersionDestroyed
			case !md.DeletionTime.IsZero():
				state = VersionDeleted
			}
		}
		return Record{}, &VersionError{Path: s.Path(path), Version: version, State: state}
	}
	s.observe("read_version", "ok", start, true)
	rec, err := Decode(kvs.Data)
	if err != nil {
		var me *MalformedError
		if errors.As(err, &me) {
			me.Path = fmt.Sprintf("%s (version %d)", s.Path(path), version)
		}
		return Record{}, err
	}
	return rec, nil
}

// Versions returns the record's KV v2 version range from its metadata:
// current is the latest version (it may be deleted: Read says so), oldest
// the oldest version still kept (versions before it were pruned by
// max_versions). Versions in between may be deleted or destroyed;
// ReadVersion says which. A path that never held a version (or whose
// metadata was deleted) is ErrNotFound.
func (s *Store) Versions(ctx context.Context, path string) (current, oldest int, err error) {
	start := time.Now()
	var md *api.KVMetadata
	err = s.once(ctx, "metadata", func() (err error) { md, err = s.kv.GetMetadata(ctx, path); return err })
	if err != nil {
		if errors.Is(err, api.ErrSecretNotFound) {
			s.observe("metadata", "not_found", start, true)
			return 0, 0, s.notFound(path)
		}
		return 0, 0, s.classify("metadata", path, err, start)
	}
	s.observe("metadata", "ok", start, true)
	current = md.CurrentVersion
	oldest = math.MaxInt
	for k, v := range md.Versions {
		n := v.Version
		if n == 0 {
			n, _ = strconv.Atoi(k)
		}
		if n > 0 && n < oldest {
			oldest = n
		}
	}
	if oldest == math.MaxInt {
		oldest = max(md.OldestVersion, 1)
	}
	if current == 0 {
		return 0, 0, s.notFound(path)
	}
	return current, oldest, nil
}
