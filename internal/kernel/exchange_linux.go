package kernel

import (
	"os"

	"golang.org/x/sys/unix"
)

// RenameExchange swaps two paths atomically (renameat2
// RENAME_EXCHANGE). Tests use it to check that names follow an exchange.
func RenameExchange(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "rename exchange", Old: a, New: b, Err: err}
	}
	return nil
}
