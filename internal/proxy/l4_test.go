package proxy_test

import (
	"github.com/portcullis/portcullis/internal/l4"
	"github.com/portcullis/portcullis/internal/proxy"
)

// A backend serves layer-4 connections as well as HTTP requests.
var _ l4.Backend = (*proxy.Backend)(nil)
