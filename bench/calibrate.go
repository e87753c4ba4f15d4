package main

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// calibration is what this machine allows: the latency of one small
// append and fdatasync in the data directory, and a loopback round trip.
type calibration struct {
	Fsync time.Duration
	// PairFsync is the time two appends+fdatasyncs on two files of the
	// same file system take when they start together: what a leader's and
	// a follower's fsyncs cost when the three nodes share one disk (on
	// ext4 they queue for the one journal).
	PairFsync time.Duration
	RTT       time.Duration
	Samples   int
}

// Floor is the least latency of one durable write in a 3-node cluster
// with a disk per node: the leader's fsync runs in parallel with the round
// trip to a follower, whose own fsync comes before its answer.
func (c calibration) Floor() time.Duration { return max(c.Fsync, c.RTT+c.Fsync) }

// SharedFloor is the same on one shared disk, where the two fsyncs overlap
// only as far as the file system lets them.
func (c calibration) SharedFloor() time.Duration { return c.RTT + c.PairFsync }

const calibrationSamples = 200

func calibrate(dir string) (calibration, error) {
	c := calibration{Samples: calibrationSamples}
	f, err := os.Create(filepath.Join(dir, "calibration"))
	if err != nil {
		return c, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 64)
	var ds []time.Duration
	for range calibrationSamples {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return c, err
		}
		if err := fdatasync(f); err != nil {
			return c, err
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	c.Fsync = ds[len(ds)/2]
	if c.PairFsync, err = pairFsync(dir, buf); err != nil {
		return c, err
	}
	if c.RTT, err = roundTrip(); err != nil {
		return c, err
	}
	return c, nil
}

// roundTrip is the median time for 64 bytes to go to an echo server on
// loopback and back.
func roundTrip() (time.Duration, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(c, c)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	buf := make([]byte, 64)
	var ds []time.Duration
	for range calibrationSamples {
		t0 := time.Now()
		if _, err := conn.Write(buf); err != nil {
			return 0, err
		}
		if _, err := io.ReadFull(conn, buf); err != nil {
			return 0, err
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}

// pairFsync is the median time for two appends+fdatasyncs on two files,
// started together, to both finish.
func pairFsync(dir string, buf []byte) (time.Duration, error) {
	var fs [2]*os.File
	for i := range fs {
		f, err := os.Create(filepath.Join(dir, "calibration-pair"+string(rune('a'+i))))
		if err != nil {
			return 0, err
		}
		defer os.Remove(f.Name())
		defer f.Close()
		fs[i] = f
	}
	var ds []time.Duration
	errc := make(chan error, 2)
	for range calibrationSamples {
		t0 := time.Now()
		for _, f := range fs {
			go func() {
				_, err := f.Write(buf)
				if err == nil {
					err = fdatasync(f)
				}
				errc <- err
			}()
		}
		for range fs {
			if err := <-errc; err != nil {
				return 0, err
			}
		}
		ds = append(ds, time.Since(t0))
	}
	slices.Sort(ds)
	return ds[len(ds)/2], nil
}
