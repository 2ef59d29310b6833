// Package simworld runs the real rotator — daemons (Run, with distinct and
// with equal instance ids) and -once runs (Rotate) living at the same time,
// each with its own wall-clock skew — against the Affix fake and an
// in-memory KV v2 store, on one deterministic scheduler inside a
// testing/synctest bubble (fake time). Every I/O call of every process
// (Vault read, Vault write, Affix POST) parks at a gate; when every process
// is parked or asleep (synctest.Wait) the scheduler either runs a due event
// (a kill, a clean stop, a restart, a pause, an operator's edit, an outage
// beginning or ending, a late Affix request landing) or picks one parked
// call with the seeded rng (processes sorted by id) and applies it — maybe
// with a fault, maybe holding its answer, maybe pausing the process before
// or after — or, when nothing is parked, lets fake time run to the next
// timer or event. A seed replays exactly.
//
// A paused process is simply not served while time runs and others act;
// its request deadlines freeze with it (Go's timers run on the monotonic
// clock, which stops in a VM freeze), so a request parked before the pause
// is sent after it: a stale request. A late request is sent, answered with
// a reset or left to time out, and applied by Affix up to 15 minutes later.
// A lost Vault answer is a write applied whose caller gets an error.
//
// After every step (and at least every simulated minute) it checks, each
// violation message starting with its class (-sim.skip looks past one):
//   - [fresh] I1 (Vault's client_secret accepted by Affix) and I2 (every
//     secret Affix accepts is the record's current, previous or pending):
//     a violation may begin only from a stale landing — the request that
//     last dropped the current secret (I1) or last added the unrecorded
//     one (I2) was sent by a process whose lease had expired when it
//     landed, or whose rotation had moved on (phase or rotation id), or
//     whose namesake (same instance id) wrote the record since it read
//     it, or Affix changed its set itself; any other is a bug at once.
//   - [drift] bounded drift: once begun, an I1/I2 violation ends before
//     some daemon has been live, unpaused and unhindered (no Affix or
//     Vault outage, no 429 floor, record not deleted) for simDriftBound =
//     reconcile_interval + 5m.
//   - [grace] I3: a request dropping the previous secret lands no earlier
//     than the grace_until its sender last read, plus clock_skew_margin if
//     it took over an overlap another instance started (by its clock); and
//     the consumers get the grace in true time: the whole grace less 1s
//     (the writer of the overlap), less how late the overlap write landed
//     and any skew beyond the margin (another process).
//   - [fork] I4/I6: one pending secret per rotation id; no new secret
//     written over a staged or overlap record.
//   - [lease] a process stopped cleanly (ctx cancelled) holding the lease
//     it wrote tries to release it (a Vault call after the stop) unless a
//     namesake is live.
//   - [floor] no process sends an Affix request inside another's 429
//     Retry-After (from 5s after it, to its end less the hosts' skew,
//     a stepped-back clock's included), unless its receiver could not
//     record it (paused, killed, its Vault write failed), an operator
//     edited the lease, or the sender acted on a version from before the
//     floor was recorded under a lease that was no fence (a namesake's,
//     or one held only by a stepped-back clock).
//   - [anchor] a daemon live and unpaused, nothing blocking, starts a due
//     rotation (schedule.Next(rotated_at) or rotated_at + max_age, plus
//     jitter; its own start when there is no rotated_at) within
//     simAnchorSlack; [schedule] (TestSimulationRestarts) a rotation
//     completes at least every interval + jitter + grace + margin + slack.
//   - [lost-answer] a -once run whose final or abort write landed (its
//     answer maybe lost) reports success (not ByOther, counted in
//     rotations_total) or aborted, and never stages another secret, unless
//     another writer moved the record since.
//   - [final] after the faults stop (every process killed, late requests
//     landed, outages over), one daemon finishes the rotation in flight
//     within simFinalSlack + a lease after max(start, 429 floor,
//     grace_until + margin) (overlap) or after max(start, floor) + lease +
//     grace + margin (staged), and after max(that, reconcile bound + 5m)
//     Affix accepts exactly {current} (stable) or {current, previous}
//     (overlap).
//
// Added cases (faults.go, pickCases: each played on some seeds, each
// counted as an event class, case-<name> for the seeds that play it) and
// the checks they feed:
//   - [operator] -reaccept-previous after ten edits pruned the history
//     (max_versions 10): refused, nothing written, no Affix request
//     applied; one that succeeds brings back the secret its rotation
//     replaced. An -extend-grace landing between two failed writes of a
//     run that had dropped the previous secret: once it returned
//     success, Affix accepts [current, previous] until its grace_until
//     (less the hosts' spread), unless a stale request dropped one since
//     (the drift bound covers that).
//   - [bootstrap] after `vault kv metadata delete` (the path looks never
//     used) no process creates the record, and no request carries a secret
//     never written to Vault ([new] alone drops whatever Affix accepts:
//     only an operator's one-shot bootstrap may, and none here is one); the
//     operator seeds the record again later.
//   - [reread] with the world's change marker (rotator.Options.Changes),
//     an operator's -reaccept-previous D is ended by a live, unpaused,
//     unhindered daemon within D + reread_interval + clock_skew_margin +
//     the hosts' clock spread + simNoticeSlack (a lease of a killed
//     operator process, an operator's lease edit, retries); 10 ×
//     reread_interval instead of reread_interval without the marker or when
//     the action's bump of it failed. A stable daemon shows a -once's
//     rotation (last_success_timestamp_seconds) within the same re-read
//     bound + slack.
//   - clock jumps: a host's clock jumps forward by more than the margin
//     (minutes to two days) for a while. [future-count]: a process that
//     read a version with a rotated_at, staged_at or seeded_at beyond its
//     clock + margin (three reads or more, versions it did not write)
//     counted it in record_future_times_total. [once-future]: a plain
//     -once on a host whose clock is right is never satisfied by a
//     rotation staged (true time) before it started. I1-I3 stay checked
//     with the existing oracle; what a jumped clock wrote (leases, grace,
//     429 floors) holds the liveness bounds until it passes, and the I3
//     grace is shortened by the jump of a writer whose own clock jumped
//     since its overlap write (it cannot do better); see landed and
//     clockJump.
//   - [incident] a leaked-secret -once (-once -grace D) during an overlap,
//     paused past its lease (a daemon takes it over) or killed and run
//     again: when it exits 0, the leaked secret is neither current nor
//     accepted by Affix.
//   - seeded records (no rotated_at) with the daemon restarted every 25-35
//     minutes (TestSimulationRestarts, even seeds): [anchor] and
//     [schedule] count from seeded_at, else Vault's created_time.
//
// The world is a library: Simulate plays one seed and returns the World
// (its event counts and trail) and the first violation. It must run inside
// a testing/synctest bubble (the test wraps each seed in synctest.Test):
// its scheduler waits with synctest.Wait until every process is parked or
// asleep. Only the rotator's exported API is used. The package is for
// tests: product code never imports it.
//
// Files: world.go (the world, its processes, the gate that schedules every
// Vault and Affix call, the store, the change marker and the transport),
// faults.go (chaos: kills, pauses, restarts, outages, clock steps and
// jumps, operator edits and actions), oracle.go (the checks).
package simworld
