// Command pause is the sandbox ("pause") image of the local test cluster: it holds a pod's
// namespaces open by doing nothing until it is told to stop, then exits 0. As PID 1 of a pod
// that shares its process namespace it also reaps orphaned children, like the upstream pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for { // reap every exited child; stop when none is left
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
