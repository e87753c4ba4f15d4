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
	Fsync   time.Duration
	RTT     time.Duration
	Samples int
}

// Floor is the least latency of one durable write in a 3-node cluster:
// the leader's fsync runs in parallel with the round trip to a follower,
// whose own fsync comes before its answer.
func (c calibration) Floor() time.Duration { return max(c.Fsync, c.RTT+c.Fsync) }

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
