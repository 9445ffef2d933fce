//go:build !race

package compress

// raceEnabled is true when the race detector is on.
const raceEnabled = false
