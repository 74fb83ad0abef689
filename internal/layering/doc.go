// Package layering holds the test that keeps spooky's imports pointing one
// way: from cmd down to the leaves, as the table "Layering" in
// docs/ARCHITECTURE.md states. The table is the rule; the test reads it.
package layering
