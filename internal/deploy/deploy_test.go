package deploy

import (
	"bytes"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/kelseyhightower/envconfig"
	"gopkg.in/yaml.v3"

	"github.com/purgeq/purgeq/internal/config"
)

type compose struct {
	Services map[string]struct {
		Image       string            `yaml:"image"`
		Build       any               `yaml:"build"`
		Command     []string          `yaml:"command"`
		Entrypoint  []string          `yaml:"entrypoint"`
		Environment map[string]string `yaml:"environment"`
		Ports       []string          `yaml:"ports"`
		Volumes     []string          `yaml:"volumes"`
		Secrets     []string          `yaml:"secrets"`
		Healthcheck struct {
			Test []string `yaml:"test"`
		} `yaml:"healthcheck"`
		DependsOn map[string]struct {
			Condition string `yaml:"condition"`
		} `yaml:"depends_on"`
	} `yaml:"services"`
	Secrets map[string]struct {
		File string `yaml:"file"`
	} `yaml:"secrets"`
	Volumes map[string]any `yaml:"volumes"`
}

// knownVariables are every PURGE_ variable the commands read.
func knownVariables(t *testing.T) map[string]bool {
	var b bytes.Buffer
	if err := envconfig.Usagef(config.Prefix, &config.Config{}, &b, "{{range .}}{{usage_key .}}\n{{end}}"); err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, k := range strings.Fields(b.String()) {
		known[k] = true
	}
	return known
}

func TestComposeFile(t *testing.T) {
	raw, err := os.ReadFile("../../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var c compose
	if err := yaml.Unmarshal(raw, &c); err != nil {
		t.Fatalf("docker-compose.yml does not parse: %v", err)
	}
	for _, name := range []string{"redis", "worker", "intake"} {
		if _, ok := c.Services[name]; !ok {
			t.Fatalf("no %s service", name)
		}
	}
	redis := c.Services["redis"]
	cmd := strings.Join(redis.Command, " ")
	if !strings.Contains(cmd, "--appendonly yes") || !strings.Contains(cmd, "--maxmemory-policy noeviction") || len(redis.Volumes) == 0 || !strings.HasPrefix(redis.Image, "redis:7") {
		t.Errorf("redis needs AOF, noeviction and a volume: %+v", redis)
	}
	known := knownVariables(t)
	for name, s := range c.Services {
		if len(s.Healthcheck.Test) == 0 {
			t.Errorf("%s has no healthcheck", name)
		}
		for k, v := range s.Environment {
			if !known[k] {
				t.Errorf("%s sets %s, which no command reads", name, k)
			}
			if k == "PURGE_CLOUDFLARE_API_TOKEN" || k == "PURGE_UI_PASSWORD" || k == "PURGE_INTAKE_TOKENS" {
				t.Errorf("%s passes the secret %s in the environment; use %s_FILE", name, k, k)
			}
			if strings.HasSuffix(k, "_FILE") && !strings.HasPrefix(v, "/run/secrets/") {
				t.Errorf("%s: %s=%s is not a mounted secret", name, k, v)
			}
		}
		for _, sec := range s.Secrets {
			if c.Secrets[sec].File == "" {
				t.Errorf("%s uses secret %s, which is not declared", name, sec)
			}
		}
	}
	worker, intake := c.Services["worker"], c.Services["intake"]
	if worker.Image != "purgeq:latest" || worker.Build == nil || intake.Image != worker.Image {
		t.Errorf("worker and intake must run the image built here: %q %q", worker.Image, intake.Image)
	}
	if worker.Environment["PURGE_REDIS_URL"] != "redis://redis:6379/0" || worker.Environment["PURGE_HTTP_ADDR"] != "0.0.0.0:8080" || worker.Environment["PURGE_CLOUDFLARE_API_TOKEN_FILE"] == "" {
		t.Errorf("worker environment: %v", worker.Environment)
	}
	if worker.Environment["PURGE_UI_PASSWORD_FILE"] == "" {
		t.Error("the worker's UI listens beyond loopback without a password")
	}
	if strings.Join(intake.Entrypoint, " ") != "/usr/local/bin/enqueue serve" || intake.Environment["PURGE_INTAKE_ADDR"] != "0.0.0.0:8081" {
		t.Errorf("intake: %+v", intake)
	}
	for name, want := range map[string]string{"worker": "127.0.0.1:8080:8080", "intake": "127.0.0.1:8081:8081"} {
		if s := c.Services[name]; len(s.Ports) != 1 || s.Ports[0] != want {
			t.Errorf("%s ports %v, want %s", name, s.Ports, want)
		}
		if c.Services[name].DependsOn["redis"].Condition != "service_healthy" {
			t.Errorf("%s does not wait for a healthy Redis", name)
		}
	}
}

func TestDockerfile(t *testing.T) {
	raw, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	d := string(raw)
	if n := len(regexp.MustCompile(`(?m)^FROM `).FindAllString(d, -1)); n != 2 {
		t.Errorf("%d stages, want a build stage and a runtime stage", n)
	}
	for _, want := range []string{"CGO_ENABLED=0", "./cmd/worker", "./cmd/enqueue", "USER 10001", "FROM golang:1.26"} {
		if !strings.Contains(d, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if m := regexp.MustCompile(`(?m)^USER (\S+)`).FindStringSubmatch(d); m == nil || m[1] == "root" || m[1] == "0" {
		t.Error("the image runs as root")
	}
}

// TestDockerignore: the build context leaves out the repository's history,
// local binaries and run results (COPY . . would send them into every
// image build), and keeps what the build compiles.
func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile("../../.dockerignore")
	if err != nil {
		t.Fatal(err)
	}
	ignored := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n") {
		if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
			ignored[line] = true
		}
	}
	for _, want := range []string{".git", "*.test", "/worker", "/enqueue", "/purgebench", "/test-artifacts/", "/bench-results/"} {
		if !ignored[want] {
			t.Errorf(".dockerignore does not leave out %s", want)
		}
	}
	for _, needed := range []string{"go.mod", "go.sum", "cmd", "/cmd", "internal", "*.go"} {
		if ignored[needed] {
			t.Errorf(".dockerignore leaves out %s, which the build needs", needed)
		}
	}
}
