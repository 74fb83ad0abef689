//go:build !linux

package main

import "syscall"

// childSysProcAttr has nothing to add outside Linux; the harness stops its
// children itself on every exit it gets to run code for.
func childSysProcAttr() *syscall.SysProcAttr { return nil }
