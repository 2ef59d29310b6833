//go:build race

package rotator_test

// simDefaultN is -sim.n's default under the race detector, which makes
// the simulation several times slower.
const simDefaultN = 500
