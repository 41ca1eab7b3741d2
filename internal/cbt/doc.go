// Package cbt keeps a persistent map of the byte ranges of a block device
// written since an instant (changed-block tracking), so that an
// incremental image can read only what changed since its parent
// (docs/incrementals.md). A service (Serve) attaches a write tracker
// (internal/track) to the device and saves the map every few seconds;
// create asks it for a fresh map (Flush) and trusts it only if Check
// finds nothing that could have hidden a write.
//
// The map is a list of epochs: the ranges written in each, from its
// start to the next one's. A create starts a new epoch before it reads
// anything, so the next image's instant falls in it or after it, and the
// map since any instant is the union of the epochs that end after it:
// the map restarts at each image without forgetting what a differential
// against an older full image still needs.
package cbt

// DefaultDir is where maps are kept, one directory per device.
const DefaultDir = "/var/lib/platter/track"
