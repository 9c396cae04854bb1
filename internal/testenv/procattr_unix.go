//go:build unix && !linux

package testenv

import "syscall"

// serverProcAttr puts a server in its own process group, so it can be stopped
// with its children. (Only Linux can also kill it when the test binary dies.)
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
