package handoff

import "os"

// Recorder reads files and remembers their bytes, for Handoff.Files: a
// configuration is compiled with its ReadFile, and the next image
// compiles it again from the same bytes.
type Recorder struct {
	files map[string][]byte
}

// NewRecorder returns a Recorder that has read nothing yet.
func NewRecorder() *Recorder { return &Recorder{files: map[string][]byte{}} }

// ReadFile reads name from the file system and remembers its bytes if it
// could.
func (r *Recorder) ReadFile(name string) ([]byte, error) {
	b, err := os.ReadFile(name)
	if err == nil {
		r.files[name] = b
	}
	return b, err
}

// Files returns the bytes read so far, by name. The map is the
// Recorder's own: later reads add to it.
func (r *Recorder) Files() map[string][]byte { return r.files }
