//go:build race

package config

// allocScale: the race detector multiplies what a parse allocates (its
// shadow memory and instrumented maps): TestAliasExpansionIsBounded's
// bound grows with it.
const allocScale = 4
