//go:build !race

package simworld_test

// simDefaultN is -sim.n's default.
const simDefaultN = 500
