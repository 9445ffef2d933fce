//go:build race

package compress

// raceEnabled is true when the race detector is on: sync.Pool then drops
// some of what it is given, which allocation tests must not count.
const raceEnabled = true
