// Package clustertest holds the tests of whole clusters made of real processes: `cfs dev
// up` on loopback, then nodes killed (SIGKILL), frozen (SIGSTOP) and restarted, while the
// tests check what the cluster records and answers. It has no non-test code.
package clustertest
