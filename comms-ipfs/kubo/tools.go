//go:build tools

// Package tools names the one package this module builds, so that `go mod tidy` keeps its
// dependencies.
package tools

import _ "github.com/ipfs/kubo/cmd/ipfs"
