//go:build !race

package config

// allocScale: see race_on_test.go.
const allocScale = 1
