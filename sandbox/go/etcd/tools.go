//go:build tools

// Package tools keeps the etcd server command (go.etcd.io/etcd/server/v3 is package main) in go.mod.
package tools

import (
	_ "go.etcd.io/etcd/server/v3"
)
