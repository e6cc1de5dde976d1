package report

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// The plots are inline SVG written here: the report needs no network and
// no script to draw.

const (
	plotW, plotH = 560, 260
	padL, padR   = 52, 12
	padT, padB   = 14, 38
)

// palette colours series in order.
var palette = []string{"#2b6cb0", "#c53030", "#2f855a", "#b7791f", "#6b46c1", "#718096"}

type svgBuf struct {
	strings.Builder
}

func (b *svgBuf) f(format string, args ...any) { fmt.Fprintf(b, format, args...) }

func open(b *svgBuf, id, title string) {
	b.f(`<svg class="plot" id="%s" role="img" viewBox="0 0 %d %d" width="%d" height="%d"><title>%s</title>`,
		id, plotW, plotH, plotW, plotH, html.EscapeString(title))
}

// axis draws the frame with y ticks from lo to hi.
func axis(b *svgBuf, lo, hi float64, ylabel string) {
	x0, y0, x1, y1 := padL, plotH-padB, plotW-padR, padT
	b.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, x0, y0, x1, y0)
	b.f(`<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, x0, y0, x0, y1)
	for i := 0; i <= 4; i++ {
		v := lo + (hi-lo)*float64(i)/4
		y := yPos(v, lo, hi)
		b.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>`, x0, y, x1, y)
		b.f(`<text x="%d" y="%.1f" font-size="10" text-anchor="end">%s</text>`, x0-4, y+3, short(v))
	}
	if ylabel != "" {
		b.f(`<text x="12" y="%d" font-size="10" transform="rotate(-90 12 %d)" text-anchor="middle">%s</text>`,
			(y0+y1)/2, (y0+y1)/2, html.EscapeString(ylabel))
	}
}

func yPos(v, lo, hi float64) float64 {
	if hi <= lo {
		hi = lo + 1
	}
	return float64(plotH-padB) - (v-lo)/(hi-lo)*float64(plotH-padB-padT)
}

func xPos(v, lo, hi float64) float64 {
	if hi <= lo {
		hi = lo + 1
	}
	return float64(padL) + (v-lo)/(hi-lo)*float64(plotW-padL-padR)
}

func short(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.2f", v)
	}
}

func legend(b *svgBuf, names []string) {
	x := padL + 8
	for i, n := range names {
		b.f(`<rect x="%d" y="%d" width="10" height="10" fill="%s"/>`, x, plotH-14, palette[i%len(palette)])
		b.f(`<text x="%d" y="%d" font-size="11">%s</text>`, x+14, plotH-5, html.EscapeString(n))
		x += 22 + 7*len(n)
	}
}

// Bars is a grouped bar chart: one group per label, one bar per series.
func Bars(id, title, ylabel string, groups []string, series []string, values [][]float64, max float64) string {
	var b svgBuf
	open(&b, id, title)
	hi := max
	if hi <= 0 {
		for _, vs := range values {
			for _, v := range vs {
				hi = math.Max(hi, v)
			}
		}
		hi = math.Max(hi*1.1, 1e-9)
	}
	axis(&b, 0, hi, ylabel)
	gw := float64(plotW-padL-padR) / float64(max1(len(groups)))
	bw := gw * 0.8 / float64(max1(len(series)))
	for g, name := range groups {
		gx := float64(padL) + gw*float64(g) + gw*0.1
		for s := range series {
			v := values[s][g]
			y := yPos(v, 0, hi)
			b.f(`<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s, %s: %s</title></rect>`,
				gx+bw*float64(s), y, bw*0.95, float64(plotH-padB)-y, palette[s%len(palette)],
				html.EscapeString(name), html.EscapeString(series[s]), short(v))
		}
		b.f(`<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>`, gx+gw*0.4, plotH-padB+12, html.EscapeString(name))
	}
	legend(&b, series)
	b.WriteString(`</svg>`)
	return b.String()
}

func max1(n int) int { return max(n, 1) }

// Hist overlays histograms of several series over shared bins (outlined
// steps, so overlaps stay readable). Each series is normalised to its own
// count when norm is set.
func Hist(id, title, xlabel string, names []string, series [][]float64, bins int, norm bool) string {
	var b svgBuf
	open(&b, id, title)
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo, hi = math.Min(lo, v), math.Max(hi, v)
			}
		}
	}
	if math.IsInf(lo, 0) {
		lo, hi = 0, 1
	}
	if hi <= lo {
		hi = lo + 1
	}
	counts := make([][]float64, len(series))
	top := 0.0
	for i, s := range series {
		counts[i] = make([]float64, bins)
		for _, v := range s {
			k := int((v - lo) / (hi - lo) * float64(bins))
			counts[i][min(max(k, 0), bins-1)]++
		}
		for k := range counts[i] {
			if norm && len(s) > 0 {
				counts[i][k] /= float64(len(s))
			}
			top = math.Max(top, counts[i][k])
		}
	}
	ylabel := "rows"
	if norm {
		ylabel = "share of the group"
	}
	axis(&b, 0, top*1.1+1e-12, ylabel)
	for i, c := range counts {
		var pts []string
		for k, v := range c {
			x0 := xPos(lo+(hi-lo)*float64(k)/float64(bins), lo, hi)
			x1 := xPos(lo+(hi-lo)*float64(k+1)/float64(bins), lo, hi)
			y := yPos(v, 0, top*1.1+1e-12)
			pts = append(pts, fmt.Sprintf("%.1f,%.1f %.1f,%.1f", x0, y, x1, y))
		}
		col := palette[i%len(palette)]
		b.f(`<polyline class="series" fill="none" stroke="%s" stroke-width="1.6" points="%s"><title>%s (%d rows)</title></polyline>`,
			col, strings.Join(pts, " "), html.EscapeString(names[i]), len(series[i]))
	}
	for i := 0; i <= 4; i++ {
		v := lo + (hi-lo)*float64(i)/4
		b.f(`<text x="%.1f" y="%d" font-size="10" text-anchor="middle">%s</text>`, xPos(v, lo, hi), plotH-padB+12, short(v))
	}
	b.f(`<text x="%d" y="%d" font-size="10" text-anchor="end">%s</text>`, plotW-padR, plotH-padB+24, html.EscapeString(xlabel))
	labels := make([]string, len(names))
	for i, n := range names {
		labels[i] = fmt.Sprintf("%s (%d)", n, len(series[i]))
	}
	legend(&b, labels)
	b.WriteString(`</svg>`)
	return b.String()
}

// Point is one dot of a scatter plot.
type Point struct {
	X, Y  float64
	Group int // colour
	Ring  bool
}

// Scatter draws points coloured by group; ringed points get an outline
// (e.g. known poison).
func Scatter(id, title string, groups []string, pts []Point) string {
	var b svgBuf
	open(&b, id, title)
	xlo, xhi, ylo, yhi := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, p := range pts {
		xlo, xhi = math.Min(xlo, p.X), math.Max(xhi, p.X)
		ylo, yhi = math.Min(ylo, p.Y), math.Max(yhi, p.Y)
	}
	if len(pts) == 0 {
		xlo, xhi, ylo, yhi = 0, 1, 0, 1
	}
	axis(&b, ylo, yhi, "component 2")
	// draw larger groups first so rare decisions stay visible
	order := make([]int, len(pts))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, c int) bool { return pts[order[a]].Group < pts[order[c]].Group })
	for _, i := range order {
		p := pts[i]
		stroke := ""
		if p.Ring {
			stroke = ` stroke="#000" stroke-width="0.8"`
		}
		b.f(`<circle class="pt" cx="%.1f" cy="%.1f" r="2.2" fill="%s" fill-opacity="0.7"%s/>`,
			xPos(p.X, xlo, xhi), yPos(p.Y, ylo, yhi), palette[p.Group%len(palette)], stroke)
	}
	legend(&b, groups)
	b.WriteString(`</svg>`)
	return b.String()
}

// Strip draws one dot per channel at its score, layer by layer; masked
// channels are red and larger; the line marks the threshold.
func Strip(id, title string, layers []string, scores [][]float64, masked [][]bool, threshold float64) string {
	var b svgBuf
	open(&b, id, title)
	// The scale ends at the 99.5th percentile (or the threshold): a few
	// channels far out would flatten the rest; they sit on the top edge as
	// triangles, their z in their tooltip.
	lo := 0.0
	var all []float64
	for _, s := range scores {
		for _, v := range s {
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				lo = math.Min(lo, v)
				all = append(all, v)
			}
		}
	}
	hi := threshold
	if len(all) > 0 {
		sort.Float64s(all)
		hi = math.Max(hi, all[min(len(all)-1, int(0.995*float64(len(all))))])
	}
	hi *= 1.05
	axis(&b, lo, hi, "suspicion z")
	gw := float64(plotW-padL-padR) / float64(max1(len(layers)))
	for l, name := range layers {
		for c, v := range scores[l] {
			x := float64(padL) + gw*float64(l) + gw*0.1 + gw*0.8*float64(c)/float64(max1(len(scores[l])))
			col, r := "#718096", 1.6
			if masked[l][c] {
				col, r = "#c53030", 3
			}
			if v > hi {
				y := yPos(hi, lo, hi)
				b.f(`<path class="ch" d="M%.1f %.1fl4 7h-8z" fill="%s"><title>%s:%d z=%s (off the scale)</title></path>`,
					x, y, col, html.EscapeString(name), c, short(v))
				continue
			}
			b.f(`<circle class="ch" cx="%.1f" cy="%.1f" r="%.1f" fill="%s"><title>%s:%d z=%s</title></circle>`,
				x, yPos(v, lo, hi), r, col, html.EscapeString(name), c, short(v))
		}
		label := name
		if r := []rune(label); len(r) > 18 {
			label = string(r[:17]) + "…"
		}
		cx := float64(padL) + gw*(float64(l)+0.5)
		if gw < 70 {
			// Narrow groups: slanted labels do not run into each other.
			b.f(`<text x="%.1f" y="%d" font-size="9" text-anchor="end" transform="rotate(-30 %.1f %d)"><title>%s</title>%s</text>`,
				cx, plotH-padB+12, cx, plotH-padB+12, html.EscapeString(name), html.EscapeString(label))
			continue
		}
		b.f(`<text x="%.1f" y="%d" font-size="10" text-anchor="middle"><title>%s</title>%s</text>`, cx, plotH-padB+12, html.EscapeString(name), html.EscapeString(label))
	}
	y := yPos(threshold, lo, hi)
	b.f(`<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#c53030" stroke-dasharray="4 3"/>`, padL, y, plotW-padR, y)
	b.f(`<circle cx="%d" cy="%d" r="3" fill="#718096"/><text x="%d" y="%d" font-size="11">kept</text>`, padL+12, plotH-9, padL+20, plotH-5)
	b.f(`<circle cx="%d" cy="%d" r="3" fill="#c53030"/><text x="%d" y="%d" font-size="11">masked</text>`, padL+62, plotH-9, padL+70, plotH-5)
	b.WriteString(`</svg>`)
	return b.String()
}
