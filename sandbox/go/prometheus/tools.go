//go:build tools

// Package tools keeps Prometheus in go.mod; `go build` builds it from here.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
)
