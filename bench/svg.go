package main

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// drawSVG plots throughput (x) against p99 latency (y, log scale), one line
// per sync policy and size, a point per client count.
func drawSVG(rs []result) string {
	const w, h, left, bottom, top, right = 720, 440, 70, 50, 30, 170
	maxOps, minLat, maxLat := 1.0, math.Inf(1), 0.0
	for _, r := range rs {
		maxOps = max(maxOps, r.OpsPerSec)
		if ms := float64(r.P99) / 1e6; ms > 0 {
			minLat, maxLat = min(minLat, ms), max(maxLat, ms)
		}
	}
	if math.IsInf(minLat, 1) {
		minLat, maxLat = 0.1, 1
	}
	lo, hi := math.Floor(math.Log10(minLat)), math.Ceil(math.Log10(maxLat))
	if hi <= lo {
		hi = lo + 1
	}
	x := func(ops float64) float64 { return left + ops/maxOps*(w-left-right) }
	y := func(ms float64) float64 {
		return h - bottom - (math.Log10(ms)-lo)/(hi-lo)*(h-bottom-top)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, h-bottom, w-right, h-bottom)
	fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="black"/>`+"\n", left, top, left, h-bottom)
	for e := lo; e <= hi; e++ {
		ms := math.Pow(10, e)
		fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%g ms</text>`+"\n", left-6, y(ms)+4, ms)
	}
	for i := 0; i <= 4; i++ {
		ops := maxOps * float64(i) / 4
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%.0f</text>`+"\n", x(ops), h-bottom+18, ops)
	}
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">operations/s</text>`+"\n", (left+w-right)/2, h-10)
	fmt.Fprintf(&b, `<text x="14" y="%d" transform="rotate(-90 14 %d)" text-anchor="middle">p99 latency</text>`+"\n", (top+h-bottom)/2, (top+h-bottom)/2)
	colors := []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"}
	type key struct {
		sync string
		size int
	}
	var keys []key
	series := map[key][]result{}
	for _, r := range rs {
		k := key{r.Sync, r.Size}
		if _, ok := series[k]; !ok {
			keys = append(keys, k)
		}
		series[k] = append(series[k], r)
	}
	for i, k := range keys {
		pts := series[k]
		slices.SortFunc(pts, func(a, b result) int { return a.Clients - b.Clients })
		c := colors[i%len(colors)]
		var path []string
		for _, r := range pts {
			if r.P99 > 0 {
				path = append(path, fmt.Sprintf("%.1f,%.1f", x(r.OpsPerSec), y(float64(r.P99)/1e6)))
			}
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", c, strings.Join(path, " "))
		for j, r := range pts {
			if r.P99 > 0 {
				fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", strings.Split(path[j], ",")[0], strings.Split(path[j], ",")[1], c)
				fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" font-size="10">%d</text>`+"\n", x(r.OpsPerSec)+5, y(float64(r.P99)/1e6)-5, r.Clients)
			}
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" fill="%s">sync=%s, %d B</text>`+"\n", w-right+10, top+16*(i+1), c, k.sync, k.size)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
