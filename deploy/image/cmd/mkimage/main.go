// Command mkimage builds the affix-rotator container image without Docker
// (package image: the binary from deploy/build-flags.sh on an empty base,
// non-root, no shell) and writes it as an OCI image layout directory, or a
// tarball for a path ending in .tar, with a CycloneDX SBOM beside it. It
// prints the image's digest and size. Run it from deploy/image:
//
//	go run ./cmd/mkimage -o /tmp/affix-rotator.oci [-version v1.2.3] [-arch arm64]
//	crane push /tmp/affix-rotator.oci registry.example.com/affix-rotator:v1.2.3
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/affix-rotator/affix-rotator/deploy/image"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var o image.Options
	var epoch int64 = -1
	fs.StringVar(&o.Output, "o", "", "output: a directory (OCI image layout) or a .tar file (tarball); required")
	fs.StringVar(&o.SBOM, "sbom", "", "CycloneDX SBOM path (default: beside -o, named .cdx.json)")
	fs.StringVar(&o.Version, "version", "", "version to stamp and label (default: $VERSION, else git describe --tags --always --dirty)")
	fs.StringVar(&o.Revision, "revision", "", "org.opencontainers.image.revision (default: git rev-parse HEAD)")
	fs.StringVar(&o.Arch, "arch", "", "GOARCH of the image (default: this machine's)")
	fs.StringVar(&o.Binary, "binary", "", "a binary already built by deploy/build-flags.sh for -version and -arch (default: build one)")
	fs.StringVar(&o.RepoRoot, "repo", "", "repository root (default: the one holding the current directory)")
	fs.Int64Var(&epoch, "created", -1, "creation time, Unix seconds (default: $SOURCE_DATE_EPOCH, else HEAD's commit time)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || o.Output == "" {
		fs.Usage()
		return fmt.Errorf("want -o PATH and no arguments")
	}
	if epoch >= 0 {
		o.Created = time.Unix(epoch, 0)
	}
	if o.RepoRoot == "" {
		root, err := repoRoot()
		if err != nil {
			return err
		}
		o.RepoRoot = root
	}
	o.Log = os.Stderr
	res, err := image.Build(ctx, o)
	if err != nil {
		return err
	}
	c := res.Config
	ports := make([]string, 0, len(c.ExposedPorts))
	for p := range c.ExposedPorts {
		ports = append(ports, p)
	}
	sort.Strings(ports)
	fmt.Printf("image:    %s (%s, %s/%s)\n", res.Output, res.Format, res.Platform.OS, res.Platform.Architecture)
	fmt.Printf("digest:   %s\n", res.Digest)
	fmt.Printf("size:     %d bytes (manifest, config and layer, compressed); binary %d bytes\n", res.Size, res.BinarySize)
	fmt.Printf("config:   user %s, entrypoint %q, cmd %q, ports %s, created %s\n",
		c.User, c.Entrypoint, c.Cmd, strings.Join(ports, " "), res.Created.Format(time.RFC3339))
	keys := make([]string, 0, len(c.Labels))
	for k := range c.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("label:    %s=%s\n", k, c.Labels[k])
	}
	fmt.Printf("sbom:     %s (CycloneDX %s JSON, %d components)\n", res.SBOM, image.SBOMSpec, res.SBOMComponents)
	return nil
}

// repoRoot is the nearest directory up from the current one whose go.mod
// is the root module's.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("current directory: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		b, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/affix-rotator/affix-rotator\n") {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("no github.com/affix-rotator/affix-rotator go.mod above %s: give -repo", dir)
		}
	}
}
