//go:build race

package simworld_test

// simDefaultN is -sim.n's default under the race detector: with the core
// change's reconcile and re-read intervals, and the change marker's
// watcher, the rotator does several times more I/O per simulated hour than
// at first; 150 seeds (with TestSimulationRestarts and
// TestSimulationDeterministic) took 1m48s under -race on 2 busy cores.
const simDefaultN = 150
