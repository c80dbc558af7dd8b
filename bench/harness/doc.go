// Package harness is the shared rig of the benchmarks (cmd/irisx-bench) and
// the failure drills (drills/): it builds the real irisx-broker binary and
// runs `serve` as a child process (reading its RSS and open files from
// /proc), assembles the same service in-process where a drill needs a fake
// clock, serves the Trackunit simulator on loopback, pre-signs install
// callbacks and calls the internal APIs. Its throwaway databases come from
// internal/testdb.
//
// It is test and benchmark tooling: nothing in the service imports it.
package harness
