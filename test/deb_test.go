package test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/doorman/doorman/internal/testproc"
)

// overlayRoot makes a chroot that is a copy-on-write view of this machine's
// root (overlayfs): a package installed into it, with its maintainer
// scripts, changes only the upper directory. Offline, and seconds instead of
// debootstrap's minutes. t.Cleanup unmounts it.
func overlayRoot(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		testproc.Require(t, "an overlay chroot needs root")
	}
	dir := t.TempDir()
	for _, d := range []string{"upper", "work", "root"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root := filepath.Join(dir, "root")
	run(t, "mount", "-t", "overlay", "overlay", "-o",
		"lowerdir=/,upperdir="+filepath.Join(dir, "upper")+",workdir="+filepath.Join(dir, "work"), root)
	t.Cleanup(func() {
		if b, err := exec.Command("umount", root).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", root, err, b)
		}
	})
	return root
}

// TestDebPackage builds the .deb with dist/build-deb.sh, installs it with
// dpkg -i in a chroot, and checks what it installed.
func TestDebPackage(t *testing.T) {
	for _, tool := range [][2]string{{"dpkg-deb", "dpkg"}, {"systemd-analyze", "systemd"}, {"chroot", "coreutils"}, {"adduser", "adduser"}} {
		requireTool(t, tool[0], tool[1])
	}
	out := t.TempDir()
	cmd := exec.Command("dist/build-deb.sh", "1.2.3", out)
	cmd.Dir = repoRoot(t)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("build-deb.sh: %v\n%s", err, b)
	}
	deb := strings.TrimSpace(string(b))
	if filepath.Base(deb) == "" || !strings.HasSuffix(deb, ".deb") {
		t.Fatalf("build-deb.sh printed %q, want the .deb's path", b)
	}

	root := overlayRoot(t)
	if getent := exec.Command("chroot", root, "getent", "passwd", "doorman"); getent.Run() == nil {
		t.Fatal("user doorman exists before the install; the test would prove nothing")
	}
	data, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "tmp", "doorman.deb"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "chroot", root, "dpkg", "-i", "/tmp/doorman.deb")

	for _, f := range []string{"/usr/bin/doorman", "/usr/lib/systemd/system/doorman.service", "/etc/default/doorman",
		"/etc/nginx/doorman/doorman-location.conf", "/etc/nginx/doorman/doorman-upstream.conf", "/etc/nginx/doorman/403.html",
		"/etc/nginx/doorman/site.conf.example", "/etc/fail2ban/filter.d/doorman.conf", "/etc/fail2ban/jail.d/doorman.conf",
		"/usr/share/doc/doorman/kernel-bans.conf"} {
		if _, err := os.Stat(filepath.Join(root, f)); err != nil {
			t.Errorf("installed: %v", err)
		}
	}
	if out := run(t, "chroot", root, "getent", "passwd", "doorman"); !strings.Contains(out, "/var/lib/doorman") {
		t.Errorf("user doorman: %q, want home /var/lib/doorman", out)
	}
	if out := run(t, "chroot", root, "dpkg-query", "-W", "-f", "${Status} ${Version}", "doorman"); out != "install ok installed 1.2.3" {
		t.Errorf("dpkg-query: %q, want install ok installed 1.2.3", out)
	}
	jail, _ := os.ReadFile(filepath.Join(root, "etc/fail2ban/jail.d/doorman.conf"))
	if !strings.Contains(string(jail), "enabled  = false") {
		t.Errorf("the installed jail is not off:\n%s", jail)
	}

	// The unit where it is installed; then one pointing at a missing binary,
	// which verify must refuse, so that its success means something.
	run(t, "chroot", root, "systemd-analyze", "verify", "/usr/lib/systemd/system/doorman.service")
	unit, _ := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/doorman.service"))
	broken := strings.Replace(string(unit), "ExecStart=/usr/bin/doorman", "ExecStart=/usr/bin/doorman-missing", 1)
	if err := os.WriteFile(filepath.Join(root, "etc/systemd/system/doorman-broken.service"), []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if b, err := exec.Command("chroot", root, "systemd-analyze", "verify", "/etc/systemd/system/doorman-broken.service").CombinedOutput(); err == nil {
		t.Errorf("systemd-analyze verify accepted a unit with a missing binary:\n%s", b)
	}

	env := run(t, "chroot", "--userspec=doorman:doorman", root, "/usr/bin/doorman", "env")
	if !strings.Contains(env, "DOORMAN_NFT_TABLE") || !strings.Contains(env, "DOORMAN_DECIDE_ADDR") {
		t.Errorf("doorman env from /usr/bin:\n%s", env)
	}
	if v := run(t, "chroot", root, "/usr/bin/doorman", "version"); strings.TrimSpace(v) != "doorman 1.2.3" {
		t.Errorf("doorman version: %q, want doorman 1.2.3", v)
	}
}
