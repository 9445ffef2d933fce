//go:build race

package quiclb

// raceEnabled is true when the race detector is on; it adds allocations
// that allocation tests must not count.
const raceEnabled = true
