package main

import (
	"fmt"
	"os"
)

const usage = `usage: go run ./bench/run MODE [flags]   (as root, from the repository)

modes:
  shards   HTTP/3 on one QUIC shard vs N shards (about 70 s)
  compare  portcullis side by side with HAProxy, nginx and Caddy, over
           HTTP and at layer 4 (installs missing peers with apt-get;
           about 8 minutes)

go run ./bench/run MODE -h lists the flags of a mode; bench/README.md
describes both.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch os.Args[1] {
	case "shards":
		shardsMain(os.Args[2:])
	case "compare":
		compareMain(os.Args[2:])
	case "-h", "-help", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "bench/run: unknown mode %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
}
