//go:build !race

package proxy

// raceEnabled is true when the race detector is on.
const raceEnabled = false
