// Package deploy checks the deployment files at the repository root
// (Dockerfile, docker-compose.yml) statically: no Docker engine runs where
// the tests do, so the test parses them and compares them with the
// configuration the commands really read.
package deploy
