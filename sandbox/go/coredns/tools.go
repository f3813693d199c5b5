//go:build tools

// Package tools keeps CoreDNS in go.mod; `go build` builds it from here.
package tools

import (
	_ "github.com/coredns/coredns"
)
