package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The container image built offline (host-example/container/rootfs.sh,
// podman import) runs a stage step, and its output equals the same step
// run here. Skipped without podman, without `make build`'s binaries, or
// where podman cannot start a container (as the browser test skips
// without a browser).
func TestStageInContainer(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Skip("podman not installed")
	}
	repo, _ := filepath.Abs("../../..")
	if _, err := os.Stat(filepath.Join(repo, "bin", "tcore")); err != nil {
		t.Skip("no bin/tcore: run make build first")
	}
	dir := t.TempDir()
	tar := filepath.Join(dir, "root.tar")
	if out, err := exec.Command(filepath.Join(repo, "host-example", "container", "rootfs.sh"), tar).CombinedOutput(); err != nil {
		t.Fatalf("rootfs.sh: %v\n%s", err, out)
	}
	image := fmt.Sprintf("localhost/tcore-test:%d", os.Getpid())
	imp := exec.Command(podman, "import",
		"--change", "ENV PATH=/opt/tcore/bin:/usr/bin:/bin",
		"--change", "ENV TCORE_MANIFEST=/opt/tcore/manifest.json",
		"--change", "ENV TCORE_ORT_LIB=/opt/tcore/ort/libonnxruntime.so.1",
		"--change", "WORKDIR /tcore", tar, image)
	if out, err := imp.CombinedOutput(); err != nil {
		t.Fatalf("podman import: %v\n%s", err, out)
	}
	defer exec.Command(podman, "rmi", "-f", image).Run()
	// podman's defaults first; then runc with small limits, for hosts whose
	// hard limits are under podman's defaults and whose cgroup layout crun
	// refuses ("cgroups in hybrid mode not supported").
	var runArgs []string
	var why []string
	for _, c := range [][]string{
		{"run", "--rm", "--network", "none"},
		{"--runtime", "runc", "run", "--rm", "--network", "none", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"},
	} {
		out, err := exec.Command(podman, append(c, image, "tcore", "version")...).CombinedOutput()
		if err == nil {
			runArgs = c
			break
		}
		why = append(why, strings.TrimSpace(string(out)))
	}
	if runArgs == nil {
		t.Skipf("podman cannot run a container here: %s", strings.Join(why, "; "))
	}
	data := filepath.Join(dir, "data")
	copyFile(t, dataset(t, -1), filepath.Join(data, "train.parquet"))
	out, err := exec.Command(podman, append(runArgs, "-v", data+":/data", image,
		"tcore", "stage", "stats", "--in", "images=/data/train.parquet", "--out", "scores=/data/scores.arrow")...).CombinedOutput()
	if err != nil {
		t.Fatalf("tcore stage in the container: %v\n%s", err, out)
	}
	here := filepath.Join(dir, "here.arrow")
	runStep(t, "stage", "stats", "--in", "images="+filepath.Join(data, "train.parquet"), "--out", "scores="+here, "--manifest", manifest)
	sameFile(t, "stats.scores from the container", here, filepath.Join(data, "scores.arrow"))
}
