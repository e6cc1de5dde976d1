//go:build !linux

package plugin

import "os/exec"

// setDeathSignal does nothing outside Linux; the plugin watches its parent.
func setDeathSignal(*exec.Cmd) {}
