package handoff

import "os"

// Recorder reads files and remembers their bytes, for Handoff.Files: a
// configuration is compiled with its ReadFile, and the next image
// compiles it again from the same bytes.
type Recorder struct {
	files map[string][]byte
	read  func(string) ([]byte, error)
}

// NewRecorder returns a Recorder that reads the file system and has read
// nothing yet.
func NewRecorder() *Recorder { return &Recorder{files: map[string][]byte{}, read: os.ReadFile} }

// Replay returns a Recorder that reads files, the bytes an earlier
// Recorder read, instead of the file system: the running configuration
// compiled again as it was read, whatever the files hold now.
func Replay(files map[string][]byte) *Recorder {
	h := &Handoff{Files: files}
	return &Recorder{files: map[string][]byte{}, read: h.ReadFile}
}

// ReadFile reads name and remembers its bytes if it could.
func (r *Recorder) ReadFile(name string) ([]byte, error) {
	b, err := r.read(name)
	if err == nil {
		r.files[name] = b
	}
	return b, err
}

// Files returns the bytes read so far, by name. The map is the
// Recorder's own: later reads add to it.
func (r *Recorder) Files() map[string][]byte { return r.files }
