package powercut

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	"github.com/stepraft/stepraft/internal/synclog"
)

// setup writes the files of a root and a log of fsyncs about them, as a
// process built with stepraft_synclog would, and returns the root and
// the log directory.
func setup(t *testing.T) (root, logDir string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("Linux only")
	}
	root, logDir = t.TempDir(), t.TempDir()
	sub := filepath.Join(root, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(name, content string) string {
		p := filepath.Join(root, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	seg := write("sub/seg", "0123456789abcdefghij")
	meta := write("meta", "slot A new; slot B")
	write("sub/fresh", "never synced, never listed")
	write("sub/listed", "listed, never synced")
	unlisted := write("sub/unlisted", "synced, not listed, more")
	reused := write("sub/reused", "another file on the same inode")
	write("sub/00000000000000000007.END", "tidwall/wal's truncated segment")

	var recs []synclog.Record
	data := func(path string, size int64, head, tail string) {
		k := key(t, path)
		recs = append(recs, synclog.Record{Kind: synclog.KindData, Path: path, Dev: k.dev, Ino: k.ino, Size: size,
			Head: []byte(head), Tail: []byte(tail)})
	}
	data(seg, 5, "01234", "01234")
	data(seg, 10, "0123456789", "0123456789")
	data(unlisted, 6, "synced", "synced")
	data(reused, 8, "the file", "the file") // the inode's previous file
	k := key(t, meta)
	recs = append(recs, synclog.Record{Kind: synclog.KindContent, Path: meta, Dev: k.dev, Ino: k.ino, Content: []byte("slot A old; slot B")})
	dk := key(t, sub)
	recs = append(recs, synclog.Record{Kind: synclog.KindDir, Path: sub, Dev: dk.dev, Ino: dk.ino, Names: map[string]uint64{
		"seg": key(t, seg).ino, "listed": key(t, filepath.Join(sub, "listed")).ino, "reused": 1,
	}})
	rk := key(t, root)
	recs = append(recs, synclog.Record{Kind: synclog.KindDir, Path: root, Dev: rk.dev, Ino: rk.ino, Names: map[string]uint64{"meta": k.ino}})
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, r := range recs {
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
	}
	buf.WriteString(`{"k":"data","p":"` + seg) // torn: the process died writing it
	if err := os.WriteFile(filepath.Join(logDir, "00000000000000000001-1"+synclog.Suffix), buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	// Another process's log, about other files.
	other := `{"k":"data","p":"/elsewhere/x","d":1,"i":1,"s":3}` + "\n"
	if err := os.WriteFile(filepath.Join(logDir, "00000000000000000002-2"+synclog.Suffix), []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	return root, logDir
}

func key(t *testing.T, path string) fileKey {
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return keyOf(fi)
}

func contents(t *testing.T, root string) map[string]string {
	out := map[string]string{}
	err := filepath.Walk(root, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(root, path)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCut(t *testing.T) {
	for _, c := range []struct {
		name string
		opts Options
		want map[string]string
	}{
		{"strict names", Options{StrictNames: true}, map[string]string{
			"meta":                         "slot A old; slot B",
			"sub/seg":                      "0123456789",
			"sub/listed":                   "",
			"sub/reused":                   "",
			"sub/00000000000000000007.END": "tidwall/wal's truncated segment",
		}},
		{"a file's fsync names it", Options{}, map[string]string{
			"meta":                         "slot A old; slot B",
			"sub/seg":                      "0123456789",
			"sub/listed":                   "",
			"sub/reused":                   "",
			"sub/unlisted":                 "synced",
			"sub/00000000000000000007.END": "tidwall/wal's truncated segment",
		}},
		{"metadata as written", Options{StrictNames: true, InPlaceAsWritten: true}, map[string]string{
			"meta":                         "slot A new; slot B",
			"sub/seg":                      "0123456789",
			"sub/listed":                   "",
			"sub/reused":                   "",
			"sub/00000000000000000007.END": "tidwall/wal's truncated segment",
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			root, logDir := setup(t)
			rep, err := Cut(root, logDir, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			got := contents(t, root)
			if len(got) != len(c.want) {
				t.Errorf("files %q, want %q", got, c.want)
			}
			for name, want := range c.want {
				if got[name] != want {
					t.Errorf("%s = %q, want %q", name, got[name], want)
				}
			}
			t.Logf("%v; %d bytes dropped", rep, rep.Dropped())
			// The process's log is replaced by one recording every file
			// left as on disk; the other process's log stays.
			logs, _ := filepath.Glob(filepath.Join(logDir, "*"+synclog.Suffix))
			if len(logs) != 2 {
				t.Fatalf("logs after the cut: %v", logs)
			}
			// Appending to a file after the cut and cutting again takes
			// the append away and nothing else.
			f, err := os.OpenFile(filepath.Join(root, "sub/seg"), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString("unsynced")
			f.Close()
			if err := os.WriteFile(filepath.Join(root, "sub/new"), []byte("x"), 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := Cut(root, logDir, c.opts); err != nil {
				t.Fatal(err)
			}
			if again := contents(t, root); len(again) != len(got) || again["sub/seg"] != got["sub/seg"] {
				t.Fatalf("second cut: %q, want %q", again, got)
			}
		})
	}
}

func TestCutRefusesBadLog(t *testing.T) {
	root, logDir := setup(t)
	name := filepath.Join(logDir, "00000000000000000003-3"+synclog.Suffix)
	bad := "not json\n" + `{"k":"dir","p":"` + root + `","d":1,"i":1}` + "\n"
	if err := os.WriteFile(name, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Cut(root, logDir, Options{}); err == nil {
		t.Fatal("a log with a bad line before its last was accepted")
	}
}
