package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/portcullis/portcullis/internal/ctl"
)

const ctlUsage = `usage: portcullis ctl [-s SOCKET | -url URL [-token-file FILE]] [-json] COMMAND [ARGS]
  -s SOCKET        the admin unix socket (admin.socket; default ` + ctl.DefaultSocket + `)
  -url URL         the admin listener instead (admin.listen), e.g. http://127.0.0.1:9100
  -token-file FILE the listener's token (admin.token_file), needed for changes; default $` + ctl.TokenEnv + `
  -json            print the API's JSON as it is
` + ctl.Usage

// cmdCtl is `portcullis ctl`: it asks a running portcullis, through its
// admin API, to show or change things.
func cmdCtl(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("s", "", "")
	base := fs.String("url", "", "")
	tokenFile := fs.String("token-file", "", "")
	asJSON := fs.Bool("json", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, ctlUsage)
			return exitOK
		}
		return ctlUsageError(stderr, &ctl.UsageError{Msg: err.Error(), Commands: true})
	}
	c, err := ctlClient(*socket, *base, *tokenFile)
	if err == nil {
		err = c.Run(context.Background(), fs.Args(), *asJSON, stdout)
	}
	var ue *ctl.UsageError
	switch {
	case errors.As(err, &ue):
		return ctlUsageError(stderr, ue)
	case err != nil:
		fmt.Fprintf(stderr, "portcullis ctl %s: %v\n", fs.Arg(0), err)
		return exitFailure
	}
	return exitOK
}

// ctlUsageError prints e, with the usage when it helps, and returns
// exitUsage.
func ctlUsageError(stderr io.Writer, e *ctl.UsageError) int {
	if e.Commands {
		fmt.Fprintf(stderr, "portcullis ctl: %s\n%s", e.Msg, ctlUsage)
	} else {
		fmt.Fprintf(stderr, "portcullis ctl: %s (portcullis ctl -h lists the commands and flags)\n", e.Msg)
	}
	return exitUsage
}

// ctlClient makes the client of the flags. Flags that do not go
// together are a *ctl.UsageError.
func ctlClient(socket, base, tokenFile string) (*ctl.Client, error) {
	switch {
	case socket != "" && base != "":
		return nil, &ctl.UsageError{Msg: "give -s SOCKET or -url URL, not both"}
	case tokenFile != "" && base == "":
		return nil, &ctl.UsageError{Msg: "-token-file is for -url (the admin listener); the socket needs no token"}
	}
	c := &ctl.Client{Socket: socket, URL: base}
	if base == "" {
		return c, nil
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, &ctl.UsageError{Msg: fmt.Sprintf("-url %q: want http://HOST:PORT, the admin listener (admin.listen)", base)}
	}
	c.Token, c.TokenFrom = os.Getenv(ctl.TokenEnv), "$"+ctl.TokenEnv
	if tokenFile != "" {
		b, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("reading the token: %v (-token-file names a copy of admin.token_file)", err)
		}
		c.Token, c.TokenFrom = strings.TrimSpace(string(b)), "-token-file "+tokenFile
		if c.Token == "" {
			return nil, fmt.Errorf("-token-file %s is empty: it should hold the token of admin.token_file", tokenFile)
		}
	}
	return c, nil
}
