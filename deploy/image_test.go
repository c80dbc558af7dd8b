// Package deploy tests the deployment files no Docker engine runs here:
// the Dockerfile, .dockerignore and docker-compose.yml are parsed and
// checked for what the issue and the contract require.
package deploy

import (
	"bufio"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

type composeFile struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Ports       []string          `yaml:"ports"`
		Restart     string            `yaml:"restart"`
		Environment map[string]string `yaml:"environment"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
}

func TestCompose(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	for _, name := range []string{"postgres", "broker", "simulator"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no %s service", name)
		}
	}
	builds := 0
	for name, s := range c.Services {
		for _, p := range s.Ports {
			if !strings.HasPrefix(p, "127.0.0.1:") {
				t.Errorf("%s publishes %q: not on loopback only", name, p)
			}
		}
		if s.Restart != "on-failure" {
			t.Errorf("%s: restart %q, want on-failure", name, s.Restart)
		}
		if s.Build != nil {
			builds++
		}
	}
	if builds != 1 {
		t.Errorf("%d services build an image, want 1 (the others reuse it)", builds)
	}
	broker, sim, pg := c.Services["broker"], c.Services["simulator"], c.Services["postgres"]
	if sim.Image == "" || sim.Image != broker.Image {
		t.Errorf("simulator image %q, broker image %q: want the broker's image reused", sim.Image, broker.Image)
	}
	hc := strings.Join(pg.Healthcheck.Test, " ")
	if !strings.Contains(hc, "pg_isready") || !strings.Contains(hc, "-h 127.0.0.1") {
		t.Errorf("postgres health check %q: want pg_isready over TCP (-h 127.0.0.1)", hc)
	}
	if hc := strings.Join(broker.Healthcheck.Test, " "); !strings.Contains(hc, "irisx-broker healthcheck") {
		t.Errorf("broker health check %q: want irisx-broker healthcheck", hc)
	}
	if broker.DependsOn["postgres"].Condition != "service_healthy" {
		t.Errorf("broker does not wait for a healthy postgres: %+v", broker.DependsOn)
	}

	// The README's compose commands match the file.
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(readme)
	if i := strings.Index(section, "**Docker Compose.**"); i >= 0 {
		section = section[i:]
		if j := strings.Index(section, "**The image.**"); j >= 0 {
			section = section[:j]
		}
	} else {
		t.Fatal("README has no Docker Compose section")
	}
	for _, want := range []string{
		"Bearer " + broker.Environment["INTERNAL_API_TOKENS"],
		"Bearer " + strings.Split(broker.Environment["ADMIN_API_TOKENS"], ",")[0],
		`"irisAppId":"` + broker.Environment["ALLOWED_APP_IDS"] + `"`,
		`"to":"http://broker` + broker.Environment["PUBLIC_ADDR"] + `/appinstall"`,
		"http://127.0.0.1:8090/sim/send",
		"http://127.0.0.1:8081/irisx.broker.v1.TokenService/GetToken",
	} {
		if !strings.Contains(section, want) {
			t.Errorf("README's compose commands lack %q", want)
		}
	}
	if broker.Environment["DEFAULT_SCOPES"] == "" {
		t.Error("compose sets no DEFAULT_SCOPES: the README's GetToken names none")
	}
}

// stage is one FROM ... AS name section of the Dockerfile.
type stage struct {
	name  string
	lines []string
}

func dockerfileStages(t *testing.T) []stage {
	t.Helper()
	f, err := os.Open("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var stages []stage
	sc := bufio.NewScanner(f)
	from := regexp.MustCompile(`(?i)^FROM\s+\S+(?:\s+AS\s+(\S+))?`)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if m := from.FindStringSubmatch(line); m != nil {
			stages = append(stages, stage{name: m[1]})
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, line)
		}
	}
	return stages
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	stages := dockerfileStages(t)
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	final := stages[len(stages)-1]
	if !strings.HasPrefix(final.lines[0], "FROM broker") {
		t.Errorf("the default (last) stage is %q, want FROM broker: the production image", final.lines[0])
	}
	broker, ok := byName["broker"]
	if !ok {
		t.Fatal("no broker stage")
	}
	text := strings.Join(broker.lines, "\n")
	if strings.Contains(text, "trackunit-sim") {
		t.Error("the production (broker) stage ships the simulator")
	}
	user := regexp.MustCompile(`(?m)^USER\s+(\S+)$`)
	for _, s := range stages {
		for _, m := range user.FindAllStringSubmatch(strings.Join(s.lines, "\n"), -1) {
			if !regexp.MustCompile(`^\d+:\d+$`).MatchString(m[1]) {
				t.Errorf("stage %s: USER %s is not numeric", s.name, m[1])
			}
		}
	}
	if u := user.FindStringSubmatch(text); u == nil || u[1] != "65532:65532" {
		t.Errorf("broker stage USER = %v, want 65532:65532", u)
	}
	if !regexp.MustCompile(`(?s)HEALTHCHECK .*CMD \["/usr/local/bin/irisx-broker", "healthcheck"\]`).MatchString(text) {
		t.Error("no HEALTHCHECK through irisx-broker healthcheck")
	}
	for _, label := range []string{"source", "revision", "version", "licenses"} {
		if !strings.Contains(text, "org.opencontainers.image."+label+"=") {
			t.Errorf("no org.opencontainers.image.%s label", label)
		}
	}
	if _, ok := byName["simulator"]; !ok {
		t.Error("no simulator target")
	}
	if !strings.Contains(strings.Join(byName["build"].lines, "\n"), "GOTOOLCHAIN=auto") {
		t.Error("the build stage does not set GOTOOLCHAIN=auto (an older builder image would refuse go.mod)")
	}

	b, err := os.ReadFile("../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	ignored := strings.Fields(string(b))
	for _, want := range []string{".git", ".dev", "bin"} {
		if !slices.Contains(ignored, want) {
			t.Errorf(".dockerignore lacks %s", want)
		}
	}
}
