// Package node will drive core with a log store, a snapshot store and a
// transport: the API an application embeds (see DESIGN.md). It is not
// written yet.
package node
