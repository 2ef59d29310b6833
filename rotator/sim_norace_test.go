//go:build !race

package rotator_test

// simDefaultN is -sim.n's default.
const simDefaultN = 500
