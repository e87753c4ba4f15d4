// Package snapshotter will store snapshot files: written through a temp
// file, fsync and rename, verified by CRC, the newest valid one loaded,
// old ones purged, bodies streamed (see DESIGN.md). It is not written yet.
package snapshotter
