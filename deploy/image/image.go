// Package image builds the affix-rotator container image without Docker:
// the static binary from deploy/build-flags.sh in one layer on an empty base
// (no shell, no package manager), the way ko does, with go-containerregistry.
// It writes an OCI image layout (a directory) or a tarball, and a CycloneDX
// SBOM of the binary beside it. cmd/mkimage is its command line.
//
// The image's contract with deploy/docker/Dockerfile and the Helm chart
// (user, entrypoint, command, port, labels) is the Config below; the tests
// check it against both files.
package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The image's contract: who it runs as, what it runs, where it listens.
const (
	// UID and GID the daemon runs as (distroless's "nonroot"; the chart's
	// runAsUser and runAsGroup).
	UID, GID = 65532, 65532
	// BinaryPath is the binary in the image, and the entrypoint.
	BinaryPath = "/affix-rotator"
	// ConfigPath is where the chart mounts config.yaml.
	ConfigPath = "/etc/affix-rotator/config.yaml"
	// Port is the listener of /metrics, /healthz, /readyz and /status.
	Port = "9464/tcp"
	// Source is the org.opencontainers.image.source label.
	Source = "https://github.com/affix-rotator/affix-rotator"
	// Title and Description are the title and description labels.
	Title       = "affix-rotator"
	Description = "Rotates the OAuth client_secret of Affix API clients, kept in HashiCorp Vault"
)

// Label names (the OCI image spec's pre-defined annotation keys).
const (
	LabelTitle       = "org.opencontainers.image.title"
	LabelDescription = "org.opencontainers.image.description"
	LabelVersion     = "org.opencontainers.image.version"
	LabelSource      = "org.opencontainers.image.source"
	LabelRevision    = "org.opencontainers.image.revision"
	LabelCreated     = "org.opencontainers.image.created"
)

// Command is the image's default command (CMD): the daemon, with the
// config at ConfigPath. The chart gives the same as args.
func Command() []string { return []string{"run", "--config", ConfigPath} }

// Config is the image config for a version and revision: non-root user,
// entrypoint the binary, the port, the labels.
func Config(version, revision string) v1.Config {
	labels := map[string]string{
		LabelTitle:       Title,
		LabelDescription: Description,
		LabelVersion:     version,
		LabelSource:      Source,
		LabelRevision:    revision,
	}
	return v1.Config{
		User:         fmt.Sprintf("%d:%d", UID, GID),
		Entrypoint:   []string{BinaryPath},
		Cmd:          Command(),
		ExposedPorts: map[string]struct{}{Port: {}},
		WorkingDir:   "/",
		Labels:       labels,
	}
}

// Options of Build.
type Options struct {
	// RepoRoot is the repository's root (go.mod, deploy/build-flags.sh).
	RepoRoot string
	// Output is where the image goes: a path ending in .tar gets a tarball
	// (docker save's format, which docker load and crane push read; its
	// manifest, made by the reader, has Docker media types), any other an
	// OCI image layout directory. An existing image there is replaced.
	Output string
	// SBOM is the path of the CycloneDX JSON SBOM; empty: beside Output
	// (SBOMPath).
	SBOM string
	// Version is stamped into the binary and the version label; empty:
	// DefaultVersion.
	Version string
	// Revision is the revision label (a commit); empty: DefaultRevision.
	Revision string
	// Created is the image's creation time and every file's mtime; zero:
	// DefaultCreated. Fixed, so that the same binary gives the same digest.
	Created time.Time
	// Arch is the GOARCH of the binary and the image; empty: the host's.
	Arch string
	// Binary, when set, is a binary already built with deploy/build-flags.sh
	// for Version and Arch, used instead of building one.
	Binary string
	// Log receives progress lines; nil: none.
	Log io.Writer
}

// Result is what Build wrote.
type Result struct {
	// Output is the image's path; Format "oci-layout" or "tarball".
	Output, Format string
	// Digest is the image manifest's digest (what a registry shows once
	// the image is pushed).
	Digest v1.Hash
	// Size is the bytes a registry stores: manifest, config and layers
	// (compressed).
	Size int64
	// BinarySize is the size of the binary in the image.
	BinarySize int64
	// Config is the image config.
	Config v1.Config
	// Created is the image's creation time.
	Created time.Time
	// Platform is the image's OS and architecture.
	Platform v1.Platform
	// SBOM is the SBOM's path and SBOMComponents its number of components.
	SBOM           string
	SBOMComponents int
}

var versionRE = regexp.MustCompile(`^[A-Za-z0-9._+-]+$`)

// Build builds the binary (unless Options.Binary), the image and the SBOM,
// and writes both.
func Build(ctx context.Context, o Options) (*Result, error) {
	if o.RepoRoot == "" {
		return nil, errors.New("image: no repository root")
	}
	if o.Output == "" {
		return nil, errors.New("image: no output path")
	}
	if o.Version == "" {
		o.Version = DefaultVersion(ctx, o.RepoRoot)
	}
	if !versionRE.MatchString(o.Version) {
		return nil, fmt.Errorf("image: version %q may hold only letters, digits and . _ + -", o.Version)
	}
	if o.Revision == "" {
		o.Revision = DefaultRevision(ctx, o.RepoRoot)
	}
	if o.Created.IsZero() {
		t, err := DefaultCreated(ctx, o.RepoRoot)
		if err != nil {
			return nil, err
		}
		o.Created = t
	}
	o.Created = o.Created.UTC().Truncate(time.Second)
	if o.Binary != "" {
		// The image's platform is the binary's.
		arch, err := binaryArch(o.Binary)
		if err != nil {
			return nil, err
		}
		if o.Arch != "" && o.Arch != arch {
			return nil, fmt.Errorf("image: %s is a linux/%s binary, not linux/%s", o.Binary, arch, o.Arch)
		}
		o.Arch = arch
	}
	if o.Arch == "" {
		o.Arch = runtime.GOARCH
	}
	if o.SBOM == "" {
		o.SBOM = SBOMPath(o.Output)
	}
	logf := func(format string, args ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, format+"\n", args...)
		}
	}

	bin := o.Binary
	if bin == "" {
		tmp, err := os.MkdirTemp("", "mkimage-")
		if err != nil {
			return nil, fmt.Errorf("image: temporary directory for the binary: %w", err)
		}
		defer os.RemoveAll(tmp)
		bin = filepath.Join(tmp, "affix-rotator")
		logf("building %s (version %s, linux/%s) with deploy/build-flags.sh", bin, o.Version, o.Arch)
		if err := BuildBinary(ctx, o.RepoRoot, o.Version, o.Arch, bin); err != nil {
			return nil, err
		}
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return nil, fmt.Errorf("image: read the binary: %w", err)
	}

	img, err := Image(binary, o.Version, o.Revision, o.Arch, o.Created)
	if err != nil {
		return nil, err
	}
	res := &Result{Output: o.Output, BinarySize: int64(len(binary)), Created: o.Created,
		Config: Config(o.Version, o.Revision), Platform: v1.Platform{OS: "linux", Architecture: o.Arch}, SBOM: o.SBOM}
	if res.Digest, err = img.Digest(); err != nil {
		return nil, fmt.Errorf("image: digest: %w", err)
	}
	if res.Size, err = storedSize(img); err != nil {
		return nil, err
	}

	if err := clearOutput(o.Output); err != nil {
		return nil, err
	}
	for _, p := range []string{o.Output, o.SBOM} {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return nil, fmt.Errorf("image: directory of %s: %w", p, err)
		}
	}
	if strings.HasSuffix(o.Output, ".tar") {
		res.Format = "tarball"
		tag, err := name.NewTag("affix-rotator:" + strings.ReplaceAll(o.Version, "+", "_"))
		if err != nil {
			return nil, fmt.Errorf("image: tag for the tarball: %w", err)
		}
		if err := tarball.WriteToFile(o.Output, tag, img); err != nil {
			return nil, fmt.Errorf("image: write the tarball %s: %w", o.Output, err)
		}
		// A tarball (docker save's format) keeps the config and the layers
		// but not the manifest: who reads it makes a Docker one, with
		// another digest. Report that one, which a push of it gets.
		back, err := tarball.ImageFromPath(o.Output, nil)
		if err != nil {
			return nil, fmt.Errorf("image: read back the tarball %s: %w", o.Output, err)
		}
		if res.Digest, err = back.Digest(); err != nil {
			return nil, fmt.Errorf("image: digest of the tarball %s: %w", o.Output, err)
		}
		if res.Size, err = storedSize(back); err != nil {
			return nil, err
		}
	} else {
		res.Format = "oci-layout"
		p, err := layout.Write(o.Output, empty.Index)
		if err != nil {
			return nil, fmt.Errorf("image: write the layout %s: %w", o.Output, err)
		}
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": o.Version,
		})); err != nil {
			return nil, fmt.Errorf("image: write the image into the layout %s: %w", o.Output, err)
		}
	}
	logf("wrote %s (%s)", o.Output, res.Format)

	bom, n, err := SBOM(bin, o.Version, o.Created)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(o.SBOM, bom, 0o644); err != nil {
		return nil, fmt.Errorf("image: write the SBOM: %w", err)
	}
	res.SBOMComponents = n
	return res, nil
}

// SBOMPath is where Build puts the SBOM by default: beside the image, its
// name without .tar or .oci, plus .cdx.json.
func SBOMPath(output string) string {
	base := strings.TrimSuffix(strings.TrimSuffix(filepath.Clean(output), ".tar"), ".oci")
	return base + ".cdx.json"
}

// Image assembles the image from the binary: one layer on an empty base,
// OCI media types, every time set to created.
func Image(binary []byte, version, revision, arch string, created time.Time) (v1.Image, error) {
	fs, err := rootFS(binary, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(fs)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created:   v1.Time{Time: created},
		CreatedBy: "deploy/image: " + BinaryPath + " (deploy/build-flags.sh, VERSION=" + version + "), /etc/passwd, /etc/group, /home/nonroot, /tmp",
	}})
	if err != nil {
		return nil, fmt.Errorf("image: append the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image: config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	cf.OS, cf.Architecture = "linux", arch
	cf.Config = Config(version, revision)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, fmt.Errorf("image: set the config: %w", err)
	}
	// The labels again as manifest annotations, which registries show.
	anns := map[string]string{LabelCreated: created.Format(time.RFC3339)}
	for k, v := range cf.Config.Labels {
		anns[k] = v
	}
	out, ok := mutate.Annotations(img, anns).(v1.Image)
	if !ok {
		return nil, errors.New("image: annotations: not an image")
	}
	return out, nil
}

// The files of the image besides the binary: the user 65532 (for tools that
// look names up, and a HOME), and a /tmp for runs without a read-only root.
const (
	passwd = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
	group  = "root:x:0:\nnonroot:x:65532:\n"
)

// rootFS is the layer's tar: the directories, /etc/passwd, /etc/group and
// the binary, root-owned but /home/nonroot, all with mtime created.
func rootFS(binary []byte, created time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	type entry struct {
		name     string
		mode     int64
		uid, gid int
		data     []byte
		dir      bool
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, uid: UID, gid: GID, dir: true},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: strings.TrimPrefix(BinaryPath, "/"), mode: 0o755, data: binary},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: created, Format: tar.FormatUSTAR}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("image: layer %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("image: layer: %w", err)
	}
	return buf.Bytes(), nil
}

// storedSize is the manifest's, the config's and the layers' sizes added up.
func storedSize(img v1.Image) (int64, error) {
	m, err := img.RawManifest()
	if err != nil {
		return 0, fmt.Errorf("image: manifest: %w", err)
	}
	c, err := img.RawConfigFile()
	if err != nil {
		return 0, fmt.Errorf("image: config: %w", err)
	}
	n := int64(len(m) + len(c))
	layers, err := img.Layers()
	if err != nil {
		return 0, fmt.Errorf("image: layers: %w", err)
	}
	for _, l := range layers {
		s, err := l.Size()
		if err != nil {
			return 0, fmt.Errorf("image: layer size: %w", err)
		}
		n += s
	}
	return n, nil
}

// clearOutput removes an image left at path by an earlier run (an OCI
// layout directory, or a .tar file), and refuses to touch anything else.
func clearOutput(path string) error {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("image: output %s: %w", path, err)
	}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return fmt.Errorf("image: output %s: %w", path, err)
		}
		if len(entries) > 0 {
			if _, err := os.Stat(filepath.Join(path, "oci-layout")); err != nil {
				return fmt.Errorf("image: output %s is a directory that is not an OCI image layout: not replacing it", path)
			}
		}
	} else if !strings.HasSuffix(path, ".tar") {
		return fmt.Errorf("image: output %s is a file: give a directory (OCI layout) or a .tar path", path)
	}
	if err := os.RemoveAll(path); err != nil {
		return fmt.Errorf("image: replace %s: %w", path, err)
	}
	return nil
}

// BuildBinary builds the binary for linux/arch with deploy/build-flags.sh
// (the build of the Dockerfile and CI), stamped with version, into out.
func BuildBinary(ctx context.Context, repoRoot, version, arch, out string) error {
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "deploy", "build-flags.sh"), "-o", out)
	cmd.Env = append(os.Environ(), "VERSION="+version, "GOOS=linux", "GOARCH="+arch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("image: deploy/build-flags.sh -o %s: %w\n%s", out, err, stderr.String())
	}
	return nil
}

// binaryArch is the GOARCH of a binary built for linux without cgo, as
// the image needs it (a static binary: the image has no C library).
func binaryArch(path string) (string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("image: %s: %w", path, err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["GOOS"] != "linux" || settings["CGO_ENABLED"] != "0" || settings["GOARCH"] == "" {
		return "", fmt.Errorf("image: %s was built with GOOS=%q CGO_ENABLED=%q: want a static linux binary (deploy/build-flags.sh with GOOS=linux)",
			path, settings["GOOS"], settings["CGO_ENABLED"])
	}
	return settings["GOARCH"], nil
}

// DefaultVersion is what deploy/build-flags.sh stamps without a version:
// $VERSION, else `git describe --tags --always --dirty`, else "dev".
func DefaultVersion(ctx context.Context, repoRoot string) string {
	if v := os.Getenv("VERSION"); v != "" {
		return v
	}
	if v, err := git(ctx, repoRoot, "describe", "--tags", "--always", "--dirty"); err == nil && v != "" {
		return v
	}
	return "dev"
}

// DefaultRevision is the commit checked out (`git rev-parse HEAD`), or
// "unknown" (the Dockerfile's default) outside a git work tree.
func DefaultRevision(ctx context.Context, repoRoot string) string {
	v, err := git(ctx, repoRoot, "rev-parse", "HEAD")
	if err != nil || v == "" {
		return "unknown"
	}
	return v
}

// DefaultCreated is $SOURCE_DATE_EPOCH, else the commit time of HEAD, else
// the Unix epoch (as ko does): never the build's own time, so that the
// same commit gives the same image.
func DefaultCreated(ctx context.Context, repoRoot string) (time.Time, error) {
	if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("image: SOURCE_DATE_EPOCH %q: %w", s, err)
		}
		return time.Unix(n, 0).UTC(), nil
	}
	if s, err := git(ctx, repoRoot, "log", "-1", "--format=%ct"); err == nil {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil {
			return time.Unix(n, 0).UTC(), nil
		}
	}
	return time.Unix(0, 0).UTC(), nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
