package main

import "syscall"

// childSysProcAttr makes the kernel kill a child if the harness dies
// without stopping it (SIGKILL, a crash), so no backend or proxy is left
// holding its ports.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
