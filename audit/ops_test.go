package audit

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"

	"github.com/fanaudit/fanaudit/internal/kernel"
)

// helperOp performs op in the helper process. a holds two arguments.
func helperOp(op string, a []string) error {
	switch op {
	case "touch": // create, write, close
		return os.WriteFile(a[0], []byte("hello"), 0o644)
	case "read": // open read-only, read, close
		f, err := os.Open(a[0])
		if err != nil {
			return err
		}
		_, err = io.ReadAll(f)
		f.Close()
		return err
	case "rename":
		return os.Rename(a[0], a[1])
	case "unlink", "rmdir":
		return os.Remove(a[0])
	case "unlink-open-write": // write to a file after unlinking it
		f, err := os.Create(a[0])
		if err != nil {
			return err
		}
		if err := os.Remove(a[0]); err != nil {
			return err
		}
		if _, err := f.Write([]byte("x")); err != nil {
			return err
		}
		return f.Close()
	case "through": // a[0]/d<i> -> a[0]/t<i>/d<i> -> a[0]/e<i>, for i < a[1], mkdir t<i> first
		n, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		for i := range n {
			d, tmp, e := filepath.Join(a[0], fmt.Sprintf("d%d", i)), filepath.Join(a[0], fmt.Sprintf("t%d", i)), filepath.Join(a[0], fmt.Sprintf("e%d", i))
			mid := filepath.Join(tmp, filepath.Base(d))
			if err := os.Mkdir(tmp, 0o755); err != nil {
				return err
			}
			if err := os.Rename(d, mid); err != nil {
				return err
			}
			if err := os.Rename(mid, e); err != nil {
				return err
			}
		}
		return nil
	case "exchange": // renameat2(RENAME_EXCHANGE)
		return kernel.RenameExchange(a[0], a[1])
	case "truncate":
		return os.Truncate(a[0], 1)
	case "exec":
		return exec.Command(a[0]).Run()
	case "mkdir":
		return os.Mkdir(a[0], 0o755)
	case "chmod":
		return os.Chmod(a[0], 0o600)
	case "chown":
		return os.Chown(a[0], 1, 1)
	case "window": // a[0] dir, a[1] pattern:dirs:files:log (window_test.go)
		return windowHelper(a[0], a[1])
	case "churn": // a[0] dir, a[1] count: create, write, close and remove files
		n, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		for i := range n {
			name := filepath.Join(a[0], fmt.Sprintf("c%d", i))
			if err := os.WriteFile(name, []byte("x"), 0o644); err != nil {
				return err
			}
			if err := os.Remove(name); err != nil {
				return err
			}
		}
		return nil
	case "burst": // a[0] dir, a[1] count: create empty files
		n, err := strconv.Atoi(a[1])
		if err != nil {
			return err
		}
		for i := range n {
			f, err := os.OpenFile(filepath.Join(a[0], fmt.Sprintf("b%d", i)), os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		}
		return nil
	}
	return fmt.Errorf("unknown op %q", op)
}
