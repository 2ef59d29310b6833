package k8scheck

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

// contractBuild is the build command the project's contract states, with
// VERSION standing for the version.
const contractBuild = `CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/affix-rotator/affix-rotator/internal/version.Version=VERSION" -o affix-rotator ./cmd/affix-rotator`

// TestBuildFlags checks that deploy/build-flags.sh, which CI and the image
// both build with, runs exactly the contract's build command.
func TestBuildFlags(t *testing.T) {
	for _, v := range []string{"v1.2.3", "dev", "0.1.0-rc.1+abc"} {
		cmd := exec.Command("bash", repoPath("deploy", "build-flags.sh"), "--print")
		cmd.Env = append(os.Environ(), "VERSION="+v)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("deploy/build-flags.sh --print: %v", err)
		}
		got := strings.TrimSpace(string(out))
		if want := strings.Replace(contractBuild, "VERSION", v, 1); got != want {
			t.Errorf("deploy/build-flags.sh --print with VERSION=%s:\n got %s\nwant %s", v, got, want)
		}
	}
	cmd := exec.Command("bash", repoPath("deploy", "build-flags.sh"), "--print")
	cmd.Env = append(os.Environ(), `VERSION=1; rm -rf /`)
	if err := cmd.Run(); err == nil {
		t.Error("deploy/build-flags.sh accepts a VERSION with shell metacharacters")
	}
}

// TestDockerfile parses deploy/docker/Dockerfile with BuildKit's own parser
// and linter (the parse-time rules of `docker build --check`) and checks the
// image: builder stage, build through deploy/build-flags.sh, distroless
// nonroot final stage, user, port, entrypoint and command.
func TestDockerfile(t *testing.T) {
	src := readRepoFile(t, "deploy", "docker", "Dockerfile")
	res, err := parser.Parse(bytes.NewReader(src))
	if err != nil {
		t.Fatalf("Dockerfile does not parse: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: parser warning: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		t.Errorf("Dockerfile:%d: lint %s: %s", line, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile instructions: %v", err)
	}
	if len(metaArgs) != 0 {
		t.Errorf("ARGs before the first FROM: %d; the base images must be literal", len(metaArgs))
	}
	if len(stages) != 2 {
		t.Fatalf("%d stages, want 2 (build, final)", len(stages))
	}
	build, final := stages[0], stages[1]

	// Builder: golang:1.26, builds with deploy/build-flags.sh, VERSION from a build arg.
	if build.BaseName != "golang:1.26" || build.Name != "build" {
		t.Errorf("first stage FROM %s AS %s, want golang:1.26 AS build", build.BaseName, build.Name)
	}
	var runs []string
	versionArg := false
	for _, c := range build.Commands {
		switch c := c.(type) {
		case *instructions.ArgCommand:
			for _, a := range c.Args {
				if a.Key == "VERSION" {
					versionArg = true
				}
			}
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			runs = append(runs, line)
			if strings.Contains(line, "build-flags.sh") && !versionArg {
				t.Error("the build RUN comes before ARG VERSION: the version would not reach it")
			}
		}
	}
	buildRun := regexp.MustCompile(`(^|\s)VERSION="\$\{VERSION\}" bash deploy/build-flags.sh -o /out/affix-rotator$`)
	n := 0
	for _, r := range runs {
		if buildRun.MatchString(r) {
			n++
		}
		if regexp.MustCompile(`go\s+(build|install)`).MatchString(r) {
			t.Errorf("RUN %q builds with its own flags; build with deploy/build-flags.sh", r)
		}
	}
	if n != 1 {
		t.Errorf("want exactly one RUN VERSION=\"${VERSION}\" bash deploy/build-flags.sh -o /out/affix-rotator; RUNs: %q", runs)
	}

	// Final stage.
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" {
		t.Errorf("final stage FROM %s, want gcr.io/distroless/static-debian12:nonroot", final.BaseName)
	}
	var user string
	var expose, entrypoint, cmd []string
	var copies []*instructions.CopyCommand
	for _, c := range final.Commands {
		switch c := c.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.ExposeCommand:
			expose = append(expose, c.Ports...)
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Error("ENTRYPOINT in shell form: distroless has no shell")
			}
			entrypoint = c.CmdLine
		case *instructions.CmdCommand:
			if c.PrependShell {
				t.Error("CMD in shell form: distroless has no shell")
			}
			cmd = c.CmdLine
		case *instructions.CopyCommand:
			copies = append(copies, c)
		case *instructions.RunCommand:
			t.Error("RUN in the final stage: distroless has no shell")
		}
	}
	if user != "65532" && user != "65532:65532" {
		t.Errorf("USER %q, want 65532 (nonroot)", user)
	}
	if !reflect.DeepEqual(expose, []string{"9464"}) {
		t.Errorf("EXPOSE %v, want 9464", expose)
	}
	if !reflect.DeepEqual(entrypoint, []string{"/affix-rotator"}) {
		t.Errorf("ENTRYPOINT %q, want [\"/affix-rotator\"]", entrypoint)
	}
	if !reflect.DeepEqual(cmd, []string{"run", "--config", "/etc/affix-rotator/config.yaml"}) {
		t.Errorf("CMD %q, want [\"-config\", \"/etc/affix-rotator/config.yaml\"]", cmd)
	}
	if len(copies) != 1 || copies[0].From != "build" || !slices.Equal(copies[0].SourcePaths, []string{"/out/affix-rotator"}) || copies[0].DestPath != "/affix-rotator" {
		t.Errorf("want exactly COPY --from=build /out/affix-rotator /affix-rotator in the final stage")
	}

	// The ignore file keeps the build-flags script in the context.
	ignore := string(readRepoFile(t, "deploy", "docker", "Dockerfile.dockerignore"))
	for _, l := range strings.Split(ignore, "\n") {
		l = strings.TrimSpace(l)
		if l == "deploy" || l == "deploy/" || l == "deploy/build-flags.sh" || l == "cmd" || l == "*" {
			t.Errorf("Dockerfile.dockerignore excludes %q, which the build needs", l)
		}
	}
}
