package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestInstall runs `make install` into a DESTDIR as a packager would and
// judges what it put there with the tools that will use it: every file is
// readable by all, the binary runs, man renders every page (each flag of
// `create --help` in platter-create.1), bash, zsh and fish load the
// completions, and bash and fish complete with them by asking the
// installed binary; `make uninstall` then leaves no file behind.
func TestInstall(t *testing.T) {
	root := filepath.Dir(filepath.Dir(fixtures))
	dest := t.TempDir()
	makeIn := func(target string) {
		t.Helper()
		if _, err := exec.LookPath("make"); err != nil {
			t.Fatal("make is needed for this test and is not installed")
		}
		// A root with umask 077 must still install files everyone can read.
		cmd := exec.Command("sh", "-c", `umask 077 && exec make -s "$@"`, "sh", target, "DESTDIR="+dest, "PREFIX=/usr")
		cmd.Dir = root
		// Not the flags of a make this test may run under (make test).
		cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
			return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
		})
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", target, err, out)
		}
	}
	makeIn("install")
	usr := filepath.Join(dest, "usr")
	bin := filepath.Join(usr, "bin", "platter")
	// The installed binary is found first, as after a real install.
	env := append(os.Environ(), "PATH="+filepath.Dir(bin)+":"+os.Getenv("PATH"), "LC_ALL=C", "MANWIDTH=100", "HOME="+t.TempDir())
	tool := func(name string, args ...string) string {
		t.Helper()
		p, err := exec.LookPath(name)
		if err != nil {
			t.Fatalf("%s is needed for this test and is not installed", name)
		}
		cmd := exec.Command(p, args...)
		cmd.Env = env
		out, err := cmd.Output()
		if err != nil {
			stderr := ""
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = string(ee.Stderr)
			}
			t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr)
		}
		return string(out)
	}

	files := 0
	filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		st, err := d.Info()
		if err != nil || d.IsDir() {
			return err
		}
		files++
		want := os.FileMode(0o644)
		if p == bin {
			want = 0o755
		}
		if !st.Mode().IsRegular() || st.Mode().Perm() != want {
			t.Errorf("installed %s: mode %v, want a regular file %v", p, st.Mode(), want)
		}
		return nil
	})
	if files < 15 {
		t.Fatalf("make install installed only %d files", files)
	}
	if got, want := tool(bin, "--version"), ok(t, "--version"); got != want || !strings.HasPrefix(got, "platter version ") {
		t.Errorf("installed platter --version: %q, the binary under test says %q", got, want)
	}

	// One page per command and subcommand that --help lists (help itself
	// has none).
	var want []string
	var walk func(path []string)
	walk = func(path []string) {
		want = append(want, strings.Join(path, "-")+".1")
		inCmds := false
		for _, line := range strings.Split(ok(t, append(path[1:], "--help")...), "\n") {
			switch {
			case strings.HasPrefix(line, "Available Commands:"):
				inCmds = true
			case inCmds && strings.HasPrefix(line, "  "):
				if name := strings.Fields(line)[0]; name != "help" {
					walk(append(slices.Clip(path), name))
				}
			default:
				inCmds = false
			}
		}
	}
	walk([]string{"platter"})
	if len(want) < 10 || !slices.Contains(want, "platter-create.1") {
		t.Fatalf("commands from --help: %q", want)
	}
	manDir := filepath.Join(usr, "share", "man", "man1")
	ents, err := os.ReadDir(manDir)
	if err != nil {
		t.Fatal(err)
	}
	var pages []string
	for _, e := range ents {
		pages = append(pages, e.Name())
	}
	slices.Sort(want)
	if !slices.Equal(pages, want) {
		t.Errorf("man pages %q, want %q", pages, want)
	}
	if _, err := exec.LookPath("groff"); err != nil {
		t.Fatal("groff is needed for this test and is not installed")
	}
	for _, page := range pages {
		// groff's own warnings: a page man shows but renders wrong.
		if out, err := exec.Command("groff", "-man", "-ww", "-z", filepath.Join(manDir, page)).CombinedOutput(); err != nil || len(out) > 0 {
			t.Errorf("groff -ww %s: %v\n%s", page, err, out)
		}
	}
	// A line may break after the hyphen of a long "platter-restore(1)".
	top := regexp.MustCompile(`-\n\s+`).ReplaceAllString(tool("man", "--nh", "--nj", "-l", filepath.Join(manDir, "platter.1")), "-")
	for _, s := range []string{"PLATTER(1)", "platter - Make, check, describe and restore disk images", "--search", "--quiet", "platter-create(1)", "platter-restore(1)", "platter-verify(1)"} {
		if !strings.Contains(top, s) {
			t.Errorf("man platter.1 does not show %q:\n%s", s, top)
		}
	}
	create := tool("man", "--nh", "--nj", "-l", filepath.Join(manDir, "platter-create.1"))
	flags := regexp.MustCompile(`--[a-z][a-z0-9-]+`).FindAllString(ok(t, "create", "--help"), -1)
	if len(flags) < 10 {
		t.Fatalf("create --help lists only %q", flags)
	}
	for _, f := range append(flags, "PLATTER-CREATE(1)", "platter create [flags] SOURCE IMAGE") {
		if !strings.Contains(create, f) {
			t.Errorf("man platter-create.1 does not show %s:\n%s", f, create)
		}
	}

	// Completions: each shell loads its file, and bash and fish complete
	// a command and a flag by asking the installed binary.
	bashComp := filepath.Join(usr, "share", "bash-completion", "completions", "platter")
	const bashCompletion = "/usr/share/bash-completion/bash_completion"
	if _, err := os.Stat(bashCompletion); err != nil {
		t.Fatalf("bash-completion is needed for this test and is not installed: %v", err)
	}
	if out := tool("bash", "-c", `source "$1"; complete -p platter`, "bash", bashComp); out != "complete -o default -F __start_platter platter\n" {
		t.Errorf("bash: complete -p platter: %q", out)
	}
	complete := `source ` + bashCompletion + `; source "$1"; shift
COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}
__start_platter 2>/dev/null; printf '%s\n' "${COMPREPLY[@]}"`
	if out := tool("bash", "-c", complete, "bash", bashComp, "platter", "cr"); out != "create\n" {
		t.Errorf("bash completes %q for platter cr", out)
	}
	if out := tool("bash", "-c", complete, "bash", bashComp, "platter", "create", "--comp"); out != "--compress\n" {
		t.Errorf("bash completes %q for platter create --comp", out)
	}
	zshComp := filepath.Join(usr, "share", "zsh", "site-functions", "_platter")
	tool("zsh", "-n", zshComp)
	if b, err := os.ReadFile(zshComp); err != nil || !strings.HasPrefix(string(b), "#compdef platter\n") {
		t.Errorf("zsh completion %s: %.40q, %v", zshComp, b, err)
	}
	fishComp := filepath.Join(usr, "share", "fish", "vendor_completions.d", "platter.fish")
	tool("fish", "--no-execute", fishComp)
	if out := tool("fish", "-c", `source $argv[1]; complete -C "platter cr"`, fishComp); !strings.HasPrefix(out, "create\t") {
		t.Errorf("fish completes %q for platter cr", out)
	}

	makeIn("uninstall")
	filepath.WalkDir(dest, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		if !d.IsDir() {
			t.Errorf("left after make uninstall: %s", p)
		}
		return nil
	})
}
