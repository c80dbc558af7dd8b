package harness

import "syscall"

// childAttr makes the kernel kill a child broker when the process that
// started it dies, so an interrupted benchmark leaves nothing running.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
