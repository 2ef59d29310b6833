//go:build race

package simworld_test

// simDefaultN is -sim.n's default under the race detector: with the core
// change's reconcile and re-read intervals the rotator does several times
// more I/O per simulated hour, and 500 seeds took 2m52s under -race on 2
// busy cores (40s without); 150 keep CI's run near a minute.
const simDefaultN = 150
