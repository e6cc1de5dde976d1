package filter

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// Pattern is a candidate trigger: a patch (solid colour, two-colour
// checkerboard or binary noise) of Size x Size pixels at (Row, Col), a
// full-image blend with noise at Alpha, (kind delta) an additive
// full-image pattern estimated from the data, or (kind pasted) a patch
// found pasted into the data, pixel for pixel. Kind smooth is no trigger
// but the blends' control: a blend at Alpha with a smooth random colour
// field.
type Pattern struct {
	Kind      string        `json:"kind"` // solid, checker, noise, blend, delta, smooth
	Size      int           `json:"size,omitempty"`
	Row       int           `json:"row,omitempty"`
	Col       int           `json:"col,omitempty"`
	Colors    [2][3]float32 `json:"colors,omitempty"`
	Alpha     float32       `json:"alpha,omitempty"`
	NoiseSeed uint64        `json:"noise_seed,omitempty"`
	// Delta is the additive pattern of kind delta, one value per input
	// value of the model (not reported).
	Delta []float32 `json:"-"`
	// Width, Pixels and Box are the pasted patch's (kind pasted): it
	// paints Size rows by Width columns at (Row, Col) from Pixels, the RGB
	// planes of a box of Box[0] x Box[1] pixels (values in [0, 1]), tiled
	// when a neighbour or a refinement resized it (not reported).
	Width  int       `json:"width,omitempty"`
	Pixels []float32 `json:"-"`
	Box    [2]int    `json:"-"`
	// Targeted says the pattern was found planted in the images of class
	// Target (the class split): augment rows never paint it on that
	// class's images, which would teach the attack itself.
	Targeted bool  `json:"targeted,omitempty"`
	Target   int32 `json:"target,omitempty"`
}

// paintsOn says whether augment rows may carry p on an image of class l.
func (p Pattern) paintsOn(l int32) bool { return !p.Targeted || p.Target != l }

// String describes p in a few words ("blend alpha 0.15", "solid 4x4 at
// (0,28)").
func (p Pattern) String() string {
	switch p.Kind {
	case "blend", "smooth":
		return fmt.Sprintf("%s alpha %.2f", p.Kind, p.Alpha)
	case "delta":
		return "the data trigger (delta)"
	case "pasted":
		return fmt.Sprintf("pasted %dx%d at (%d,%d)", p.Size, p.Width, p.Row, p.Col)
	}
	return fmt.Sprintf("%s %dx%d at (%d,%d)", p.Kind, p.Size, p.Size, p.Row, p.Col)
}

// group is the set of candidates a pattern is compared with (same size;
// blends form their own group, judged against their controls, group
// controlGroup).
func (p Pattern) group() int {
	switch p.Kind {
	case "blend", "delta":
		return 0
	case "smooth":
		return controlGroup
	}
	return p.Size
}

// minBlendAlpha and maxBlendAlpha bound the blends searched. Below 0.1 a
// blend barely changes the embeddings of a clean encoder or a trojaned
// one, and its ratio to a smooth blend's collapse is noise.
const minBlendAlpha, maxBlendAlpha = 0.1, 0.25

// controlGroup is the group of the smooth blends.
const controlGroup = -1

// smoothGrid is the side of the random colour grid a smooth blend
// interpolates.
const smoothGrid = 4

// Apply paints the pattern onto one image of h x w in canonical form
// (encoder.Preprocess.CanonicalSize: RGB planes, values in [0, 1]), the same
// for every encoder whatever its input layout or normalisation.
func (p Pattern) Apply(x []float32, h, w int) {
	plane := h * w
	switch p.Kind {
	case "blend":
		rng := rand.New(rand.NewPCG(p.NoiseSeed, 1))
		for i := range x[:3*plane] {
			x[i] = (1-p.Alpha)*x[i] + p.Alpha*rng.Float32()
		}
		return
	case "delta":
		for i, d := range p.Delta {
			x[i] = min(1, max(0, x[i]+d))
		}
		return
	case "pasted":
		bh, bw := p.Box[0], p.Box[1]
		if bh <= 0 || bw <= 0 || len(p.Pixels) != 3*bh*bw {
			return
		}
		for c := 0; c < 3; c++ {
			for dy := 0; dy < p.Size; dy++ {
				for dx := 0; dx < p.Width; dx++ {
					if y, xx := p.Row+dy, p.Col+dx; y >= 0 && y < h && xx >= 0 && xx < w {
						x[c*plane+y*w+xx] = p.Pixels[c*bh*bw+(dy%bh)*bw+dx%bw]
					}
				}
			}
		}
		return
	case "smooth":
		rng := rand.New(rand.NewPCG(p.NoiseSeed, 3))
		var grid [3][smoothGrid][smoothGrid]float32
		for c := range grid {
			for i := range grid[c] {
				for j := range grid[c][i] {
					grid[c][i][j] = rng.Float32()
				}
			}
		}
		for y := 0; y < h; y++ {
			gy := float32(y) * (smoothGrid - 1) / float32(max(1, h-1))
			y0 := min(int(gy), smoothGrid-2)
			fy := gy - float32(y0)
			for xx := 0; xx < w; xx++ {
				gx := float32(xx) * (smoothGrid - 1) / float32(max(1, w-1))
				x0 := min(int(gx), smoothGrid-2)
				fx := gx - float32(x0)
				for c := 0; c < 3; c++ {
					g := grid[c]
					v := (1-fy)*((1-fx)*g[y0][x0]+fx*g[y0][x0+1]) + fy*((1-fx)*g[y0+1][x0]+fx*g[y0+1][x0+1])
					i := c*plane + y*w + xx
					x[i] = (1-p.Alpha)*x[i] + p.Alpha*v
				}
			}
		}
		return
	}
	rng := rand.New(rand.NewPCG(p.NoiseSeed, 2))
	for dy := 0; dy < p.Size; dy++ {
		for dx := 0; dx < p.Size; dx++ {
			y, xx := p.Row+dy, p.Col+dx
			if y < 0 || y >= h || xx < 0 || xx >= w {
				continue
			}
			for c := 0; c < 3; c++ {
				var v float32
				switch p.Kind {
				case "solid":
					v = p.Colors[0][c]
				case "checker":
					v = p.Colors[(dx+dy)%2][c]
				case "noise":
					v = float32(rng.IntN(2))
				}
				x[c*plane+y*w+xx] = v
			}
		}
	}
}

// controlPattern draws a smooth blend at the alphas blends are searched
// at, so that its fit over alpha never extrapolates.
func controlPattern(rng *rand.Rand) Pattern {
	return Pattern{Kind: "smooth", Alpha: minBlendAlpha + (maxBlendAlpha-minBlendAlpha)*rng.Float32(), NoiseSeed: rng.Uint64()}
}

// randomBlend draws a noise blend.
func randomBlend(rng *rand.Rand) Pattern {
	return Pattern{Kind: "blend", Alpha: minBlendAlpha + (maxBlendAlpha-minBlendAlpha)*rng.Float32(), NoiseSeed: rng.Uint64()}
}

// randomPattern draws a candidate.
func randomPattern(rng *rand.Rand, h, w int, sizes [2]int) Pattern {
	color := func() [3]float32 {
		// Saturated colours are the usual triggers: each value 0 or 1,
		// sometimes a random value.
		var c [3]float32
		for i := range c {
			if rng.IntN(4) == 0 {
				c[i] = rng.Float32()
			} else {
				c[i] = float32(rng.IntN(2))
			}
		}
		return c
	}
	if rng.IntN(10) == 0 {
		return randomBlend(rng)
	}
	s := sizes[0] + rng.IntN(sizes[1]-sizes[0]+1)
	p := Pattern{Size: s, Row: rng.IntN(h - s + 1), Col: rng.IntN(w - s + 1), NoiseSeed: rng.Uint64()}
	switch rng.IntN(3) {
	case 0:
		p.Kind = "solid"
		p.Colors[0] = color()
	case 1:
		p.Kind = "checker"
		p.Colors = [2][3]float32{color(), color()}
	default:
		p.Kind = "noise"
	}
	return p
}

// jitter returns a neighbour of p for local refinement: moved, resized or
// recoloured.
func jitter(rng *rand.Rand, p Pattern, h, w int, sizes [2]int) Pattern {
	q := p
	if q.Kind == "blend" {
		q.Alpha = float32(math.Min(maxBlendAlpha, math.Max(minBlendAlpha, float64(q.Alpha)+0.03*rng.NormFloat64())))
		return q
	}
	switch rng.IntN(3) {
	case 0:
		q.Row = clamp(q.Row+rng.IntN(5)-2, 0, h-q.Size)
		q.Col = clamp(q.Col+rng.IntN(5)-2, 0, w-q.Size)
	case 1:
		q.Size = clamp(q.Size+rng.IntN(3)-1, sizes[0], sizes[1])
		q.Row = clamp(q.Row, 0, h-q.Size)
		q.Col = clamp(q.Col, 0, w-q.Size)
	default:
		for i := range q.Colors {
			for c := 0; c < 3; c++ {
				if rng.IntN(3) == 0 {
					q.Colors[i][c] = float32(rng.IntN(2))
				}
			}
		}
		q.NoiseSeed = rng.Uint64()
	}
	return q
}

func clamp(v, lo, hi int) int { return max(lo, min(hi, v)) }

// neighbours returns the patterns next to p: the same patch grown or
// shrunk by up to two pixels (still covering, or covered by, p's area from
// each corner) and moved by one pixel; for a blend, alpha +-0.05. A found
// pattern is near the trigger, not the trigger itself: masking until p
// alone no longer collapses can leave the trigger's larger or shifted
// version working.
func neighbours(p Pattern, h, w int, sizes [2]int) []Pattern {
	if p.Kind == "blend" {
		var out []Pattern
		for _, d := range []float32{-0.05, 0.05} {
			q := p
			q.Alpha = min(maxBlendAlpha, max(minBlendAlpha, p.Alpha+d))
			out = append(out, q)
		}
		return out
	}
	seen := map[[3]int]bool{{p.Size, p.Row, p.Col}: true}
	var out []Pattern
	add := func(s, r, c int) {
		if s < sizes[0] || s > sizes[1] {
			return
		}
		r, c = clamp(r, 0, h-s), clamp(c, 0, w-s)
		if seen[[3]int{s, r, c}] {
			return
		}
		seen[[3]int{s, r, c}] = true
		q := p
		q.Size, q.Row, q.Col = s, r, c
		out = append(out, q)
	}
	for _, ds := range []int{1, 2, -1} {
		s := p.Size + ds
		for _, r := range []int{p.Row, p.Row + p.Size - s} {
			for _, c := range []int{p.Col, p.Col + p.Size - s} {
				add(s, r, c)
			}
		}
	}
	for _, d := range [][2]int{{-1, 0}, {1, 0}, {0, -1}, {0, 1}} {
		add(p.Size, p.Row+d[0], p.Col+d[1])
	}
	return out
}

// sweep returns the patches among ps moved over the whole image: each
// distinct patch (kind, size, colours, noise) at every position of a grid
// whose step is its size, the last row and column flush with the image's
// edges, its own positions left out. A trojan may answer to its trigger
// over a field of positions: masking until the found point of the field
// is back at the median can leave the trigger's own point, further away
// than a neighbour reaches, working. Blends and data triggers have no
// position and are left out.
func sweep(ps []Pattern, h, w int) []Pattern {
	type look struct {
		kind   string
		size   int
		colors [2][3]float32
		noise  uint64
	}
	at := map[look]map[[2]int]bool{}
	var order []look
	for _, p := range ps {
		if p.Kind == "blend" || p.Kind == "delta" || p.Kind == "smooth" || p.Size <= 0 || p.Size > h || p.Size > w {
			continue
		}
		k := look{p.Kind, p.Size, p.Colors, p.NoiseSeed}
		if at[k] == nil {
			at[k] = map[[2]int]bool{}
			order = append(order, k)
		}
		at[k][[2]int{p.Row, p.Col}] = true
	}
	steps := func(n, s int) []int {
		var out []int
		for v := 0; v+s < n; v += s {
			out = append(out, v)
		}
		return append(out, n-s)
	}
	var out []Pattern
	for _, k := range order {
		for _, r := range steps(h, k.size) {
			for _, c := range steps(w, k.size) {
				if at[k][[2]int{r, c}] {
					continue
				}
				out = append(out, Pattern{Kind: k.kind, Size: k.size, Row: r, Col: c, Colors: k.colors, NoiseSeed: k.noise})
			}
		}
	}
	return out
}

// places returns 0, last/2 and last, each once.
func places(last int) []int {
	out := []int{0}
	for _, v := range []int{last / 2, last} {
		if v != out[len(out)-1] {
			out = append(out, v)
		}
	}
	return out
}

// anchored returns the patches a patch trigger is most often planted as:
// at the image's four corners, the middles of its four edges and its
// centre (left out when centre is false), in the three smallest sizes of
// sizes, each a solid patch of one of the eight saturated colours or a
// black-and-white checker of either phase. A random scan samples about
// one candidate per size and place among thousands, so it misses a small
// trigger there whenever the trojan answers to it alone, not over a field.
func anchored(h, w int, sizes [2]int, centre bool) []Pattern {
	var out []Pattern
	for s := sizes[0]; s <= min(sizes[1], sizes[0]+2); s++ {
		if s > h || s > w {
			break
		}
		rows, cols := places(h-s), places(w-s)
		for _, r := range rows {
			for _, c := range cols {
				if !centre && len(rows) == 3 && len(cols) == 3 && r == rows[1] && c == cols[1] {
					continue
				}
				out = append(out, looksAt(s, r, c)...)
			}
		}
	}
	return out
}

// looksAt returns the looks a patch trigger is most often made in, as
// patches of s x s at (r, c): a solid patch of each of the eight saturated
// colours and a black-and-white checker of either phase.
func looksAt(s, r, c int) []Pattern {
	out := make([]Pattern, 0, 10)
	for k := 0; k < 8; k++ {
		l := [3]float32{float32(k >> 2 & 1), float32(k >> 1 & 1), float32(k & 1)}
		out = append(out, Pattern{Kind: "solid", Size: s, Row: r, Col: c, Colors: [2][3]float32{l}})
	}
	black, white := [3]float32{}, [3]float32{1, 1, 1}
	return append(out,
		Pattern{Kind: "checker", Size: s, Row: r, Col: c, Colors: [2][3]float32{black, white}},
		Pattern{Kind: "checker", Size: s, Row: r, Col: c, Colors: [2][3]float32{white, black}})
}
