package tooltest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// SevenZipEntry is an entry as 7-Zip lists it.
type SevenZipEntry struct {
	Dir   bool
	Size  int64
	MTime time.Time // UTC
}

// SevenZip is what 7-Zip's own reader of type typ ("udf", "iso", ...)
// lists of img (7z l -slt -tTYP), by path: a judge of Platter's readers
// that shares no code with them.
func SevenZip(t testing.TB, img, typ string) map[string]SevenZipEntry {
	t.Helper()
	cmd := exec.Command("7z", "l", "-slt", "-t"+typ, img)
	cmd.Env = append(os.Environ(), "TZ=UTC")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("7z l -slt -t%s %s: %v\n%s", typ, img, err, out)
	}
	_, list, ok := strings.Cut(string(out), "\n----------\n")
	if !ok {
		t.Fatalf("7z lists nothing:\n%s", out)
	}
	m := map[string]SevenZipEntry{}
	for _, block := range strings.Split(list, "\n\n") {
		kv := map[string]string{}
		for _, l := range strings.Split(block, "\n") {
			if k, v, ok := strings.Cut(l, " = "); ok {
				kv[k] = v
			}
		}
		if kv["Path"] == "" {
			continue
		}
		e := SevenZipEntry{Dir: kv["Folder"] == "+"}
		e.Size, _ = strconv.ParseInt(kv["Size"], 10, 64)
		if e.MTime, err = time.Parse("2006-01-02 15:04:05.999999999", kv["Modified"]); err != nil {
			t.Fatalf("7z: %s: %v", kv["Path"], err)
		}
		m[kv["Path"]] = e
	}
	return m
}
