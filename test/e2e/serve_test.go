package e2e

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startServe runs platter serve with args and returns its address once
// it listens, and its log.
func startServe(t *testing.T, args ...string) (addr string, log *strings.Builder) {
	t.Helper()
	cmd := exec.Command(platter, append([]string{"serve", "--nbd", "127.0.0.1:0"}, args...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	log = &strings.Builder{}
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("serve: %v; %s", err, log)
	}
	// "serving IMAGE on 127.0.0.1:PORT (...)"
	f := strings.Fields(line)
	for i, w := range f {
		if w == "on" && i+1 < len(f) {
			return f[i+1], log
		}
	}
	t.Fatalf("serve said %q", line)
	return "", nil
}

// imagedFixture makes the fixture disk, its image and the image restored
// to a file.
func imagedFixture(t *testing.T, script string) (disk, img, back string) {
	disk = fixture(t, script)
	dir := t.TempDir()
	img = filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	back = filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	return disk, img, back
}

// damagedImage is an image of a small ext4 with one chunk's frame broken;
// bad is the chunk's offset on the disk.
func damagedImage(t *testing.T) (img string, bad int64) {
	dir := t.TempDir()
	fs := sparseFile(t, filepath.Join(dir, "fs.img"), 64<<20)
	sh(t, "mkfs.ext4", "-q", "-F", "-E", "nodiscard", "-d", fixtures, fs)
	img = filepath.Join(dir, "fs.platter")
	ok(t, "create", "--progress", "none", "--compress", "none", fs, img)
	for _, c := range infoChunks(t, img).Chunks {
		if c.FrameOffset > 0 {
			corrupt(t, img, c.FrameOffset+64+100)
			return img, c.Offset
		}
	}
	t.Fatal("no stored chunk to damage")
	return "", 0
}

// nbdRaw speaks the protocol by hand, for requests stock clients will not
// send: it opens export name and returns the connection.
func nbdRaw(t *testing.T, addr, name string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var hello [18]byte
	if _, err := io.ReadFull(c, hello[:]); err != nil {
		t.Fatal(err)
	}
	be := binary.BigEndian
	b := be.AppendUint32(nil, 3) // fixed newstyle, no zeroes
	b = be.AppendUint64(b, 0x49484156454f5054)
	b = be.AppendUint32(b, 1) // NBD_OPT_EXPORT_NAME
	b = be.AppendUint32(b, uint32(len(name)))
	c.Write(append(b, name...))
	var info [10]byte
	if _, err := io.ReadFull(c, info[:]); err != nil {
		t.Fatal(err)
	}
	return c
}

// nbdRead sends one read and returns the reply's error number.
func nbdRead(t *testing.T, c net.Conn, off uint64, n uint32) uint32 {
	be := binary.BigEndian
	req := be.AppendUint32(nil, 0x25609513)
	req = be.AppendUint16(req, 0)
	req = be.AppendUint16(req, 0) // READ
	req = be.AppendUint64(req, 7)
	req = be.AppendUint64(req, off)
	req = be.AppendUint32(req, n)
	c.Write(req)
	var r [16]byte
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, r[:]); err != nil {
		t.Fatal(err)
	}
	errno := be.Uint32(r[4:])
	if errno == 0 {
		io.CopyN(io.Discard, c, int64(n))
	}
	return errno
}

// The NBD export of an image is the restored disk, judged by qemu-img; a
// partition export holds a filesystem that checks clean with every file;
// bad requests get errors and the server goes on; --overlay takes writes
// and never changes the image.
func TestServeNBD(t *testing.T) {
	disk, img, back := imagedFixture(t, "gpt-disk.sh")
	dir := filepath.Dir(img)
	addr, log := startServe(t, img)

	if out := sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", back); !strings.Contains(out, "identical") {
		t.Errorf("qemu-img compare: %s", out)
	}
	// The default export is the disk.
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr, back)
	// Partition 2 through NBD: a clean ext4 with every file.
	parts := sfdiskParts(t, disk)
	p2 := filepath.Join(dir, "p2.img")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd://"+addr+"/p2", p2)
	checkPartition(t, p2, "ext4", disk+".files/p2")
	if st, _ := os.Stat(p2); st.Size() != parts[2].size {
		t.Errorf("p2 export is %d bytes, the partition %d", st.Size(), parts[2].size)
	}

	// Past the end: EINVAL, and the connection and server go on.
	c := nbdRaw(t, addr, "disk")
	size := uint64(info(t, img).SourceSize)
	if e := nbdRead(t, c, size-512, 4096); e != 22 {
		t.Errorf("read past the end: error %d, want 22 (EINVAL)", e)
	}
	if e := nbdRead(t, c, 0, 4096); e != 0 {
		t.Errorf("read after a bad one: error %d", e)
	}
	// A client that goes away mid-request does not stop the server.
	c.Write([]byte{0x25, 0x60, 0x95})
	c.Close()
	// Writes to a read-only export are refused.
	if out, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4096", "nbd://"+addr+"/disk").CombinedOutput(); err == nil && !strings.Contains(string(out), "ermission") && !strings.Contains(string(out), "read-only") {
		t.Errorf("write to a read-only export: %s", out)
	}
	sh(t, "qemu-img", "compare", "-f", "raw", "-F", "raw", "nbd://"+addr+"/disk", back)

	// The port is taken: a clear error.
	if _, stderr, code := run(t, "serve", "--nbd", addr, img); code == 0 || !strings.Contains(stderr, "address already in use") {
		t.Errorf("serve on a port in use: exit %d, %s", code, stderr)
	}
	_ = log
}

// A damaged chunk gives an I/O error for its range only, and the server
// names it.
func TestServeDamagedChunk(t *testing.T) {
	img, bad := damagedImage(t)
	addr, log := startServe(t, img)
	out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", fmt.Sprintf("read %d 4096", bad), "nbd://"+addr+"/disk").CombinedOutput()
	if err == nil && !strings.Contains(string(out), "Input/output error") {
		t.Errorf("read of a damaged chunk: %s", out)
	}
	if !strings.Contains(log.String(), "bad chunk") {
		t.Errorf("the server did not name the damaged chunk: %s", log)
	}
	// Elsewhere, reads work.
	other := int64(0)
	if bad == 0 {
		other = 32 << 20
	}
	if out, err := exec.Command("qemu-io", "-r", "-f", "raw", "-c", fmt.Sprintf("read %d 4096", other), "nbd://"+addr+"/disk").CombinedOutput(); err != nil || strings.Contains(string(out), "error") {
		t.Errorf("read elsewhere: %v %s", err, out)
	}
}

// With --overlay, writes land in the overlay file (kept for the next run)
// and the image file is never written.
func TestServeOverlay(t *testing.T) {
	disk := fixture(t, "gpt-disk.sh")
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.platter")
	ok(t, "create", "--progress", "none", disk, img)
	sum := sh(t, "sha256sum", img)
	overlay := filepath.Join(dir, "overlay.img")
	addr, _ := startServe(t, "--overlay", overlay, img)
	url := "nbd://" + addr + "/disk"
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0xab 1000 70000", "-c", "write -P 0xcd 5242880 4096", url)
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 1000 70000", "-c", "read -P 0xcd 5242880 4096", url)
	// Partition exports see the same writes.
	sh(t, "qemu-io", "-f", "raw", "-c", "write -P 0x11 0 512", "nbd://"+addr+"/p2")
	p2 := sfdiskParts(t, disk)[2].start
	sh(t, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("read -P 0x11 %d 512", p2), url)
	if sh(t, "sha256sum", img) != sum {
		t.Fatal("serving with --overlay changed the image")
	}
	// A new server on the same overlay has the writes.
	addr2, _ := startServe(t, "--overlay", overlay, img)
	sh(t, "qemu-io", "-f", "raw", "-c", "read -P 0xab 1000 70000", "-c", "read -P 0xcd 5242880 4096", "nbd://"+addr2+"/disk")
	// The bytes around the writes are the image's.
	back := filepath.Join(dir, "back.img")
	ok(t, "restore", "--yes", "--progress", "none", img, back)
	sameAround := filepath.Join(dir, "cmp.img")
	sh(t, "qemu-img", "convert", "-f", "raw", "-O", "raw", "nbd://"+addr2+"/disk", sameAround)
	sameBytes(t, back, sameAround, 0, 1000, "bytes before the write")
	sameBytes(t, back, sameAround, 71000, 5242880-71000, "bytes between the writes")
	if sh(t, "sha256sum", img) != sum {
		t.Fatal("serving with --overlay changed the image")
	}
}
