package testenv

import "syscall"

// serverProcAttr puts a server in its own process group (so it can be stopped
// with its children) and has the kernel kill it if the test binary dies.
func serverProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
