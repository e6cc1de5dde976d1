package filter

import (
	"context"
	"math"
	"runtime"
	"sort"
	"sync"
)

// Planted is what the planted check found: patches that many training
// images of one label carry pixel for pixel at one place, and that images
// of that label hardly carry anywhere else.
type Planted struct {
	Found []PlantedPatch `json:"found,omitempty"`
	// Carriers is how many rows carry a found patch (suspects from then on).
	Carriers int    `json:"carriers"`
	Why      string `json:"why_none,omitempty"`
}

// PlantedPatch is one patch the planted check found: the box (Pattern, of
// kind "pasted", with the carriers' pixels), the label its carriers share,
// how many rows carry it, and the natural level it was judged against (the
// most rows of that label that carry one of its 3x3 contents at a box more
// than plantedAway pixels away).
type PlantedPatch struct {
	Pattern   Pattern `json:"pattern"`
	Label     int32   `json:"label"`
	Rows      int     `json:"rows"`
	Elsewhere int     `json:"elsewhere"`
}

// plantedSide is the side of the boxes the planted check compares: the
// smallest patch trigger; a larger pasted patch contains such boxes, each
// shared by its carriers.
const plantedSide = 3

// plantedAway is how far (pixels, in row or column) a box must lie from
// another for its count to be the other's natural level: beyond the
// largest patch triggers searched (8 px), so that a box inside the same
// pasted patch is never its own reference.
const plantedAway = 8

// plantedMinRows is the fewest carriers a planted patch has, at least;
// and at least 0.25% of the rows: on GTSRB's clean training set 13 images
// of one sign share a 3x3 of its symbol at one place (0.1%), and the
// attacks poison 1% of the rows or more.
const plantedMinRows = 10

// PlantedPatches looks for patches pasted into the training images (a
// patch trigger of dirty-label or clean-label poisoning): at every 3x3 box
// of the images (in canonical form, values k/255 as decoded), a content
// (the box's bytes) that at least max(10, 0.25% of the rows) rows of one
// label share exactly, that is at least half of all the rows carrying it
// there (a watermark on every class's images is no attack on one label),
// and that reaches ratio times (+1) the most rows of that label carrying
// it at any box more than plantedAway pixels away. Natural contents (a
// white sky, a black border) repeat over neighbouring places; a pasted
// patch sits at one. Boxes found on one label within plantedAway pixels of
// each other form one patch. It returns the report, each row's carrier
// flag and the patches as patterns (augment rows paint them, never on
// their label's images).
func PlantedPatches(im Images, labels []int32, ratio float64) (*Planted, []bool, []Pattern) {
	n := im.N
	carrier := make([]bool, n)
	rep := &Planted{}
	if im.C != 3 || im.H < plantedSide || im.W < plantedSide || n == 0 {
		rep.Why = "no 3-channel images of at least 3x3 pixels"
		return rep, carrier, nil
	}
	size, plane, w := im.size(), im.H*im.W, im.W
	// A pixel's bytes (RGB), and a box's hash: three pixels down make a
	// column's value, three columns a box's (a polynomial in a 64-bit
	// odd constant over 24-bit pixels, then mixed).
	pixel := func(img []float32, y, x int) uint64 {
		var v uint64
		for ch := 0; ch < 3; ch++ {
			v = v<<8 | uint64(math.Round(float64(min(1, max(0, img[ch*plane+y*w+x])))*255))
		}
		return v
	}
	column := func(img []float32, r, x int) uint64 {
		return (pixel(img, r, x)*plantedPrime+pixel(img, r+1, x))*plantedPrime + pixel(img, r+2, x)
	}
	boxHash := func(a, b, c uint64) uint64 { return mix64((a*plantedPrime+b)*plantedPrime + c) }
	hash := func(i, r, c int) uint64 {
		img := im.X[i*size : (i+1)*size]
		return boxHash(column(img, r, c), column(img, r, c+1), column(img, r, c+2))
	}
	type key struct {
		h uint64
		y int32
	}
	rows, cols := im.H-plantedSide+1, im.W-plantedSide+1
	minRows := max(plantedMinRows, n/400)
	type cand struct {
		k    key
		r, c int
		n    int32
	}
	type seen struct {
		k key
		m int32
	}
	// Per box, each content and label seen at least twice there, and the
	// candidates; box rows are counted in parallel, each by one worker.
	boxes := make([][]seen, rows*cols)
	found := make([][]cand, rows*cols)
	var wg sync.WaitGroup
	next := make(chan int)
	for range max(1, min(runtime.GOMAXPROCS(0), rows)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hs := make([]uint64, cols*n)
			cv := make([]uint64, w)
			local, total := map[key]int32{}, map[uint64]int32{}
			for r := range next {
				for i := 0; i < n; i++ {
					img := im.X[i*size : (i+1)*size]
					for x := range cv {
						cv[x] = column(img, r, x)
					}
					for c := 0; c < cols; c++ {
						hs[c*n+i] = boxHash(cv[c], cv[c+1], cv[c+2])
					}
				}
				for c := 0; c < cols; c++ {
					clear(local)
					clear(total)
					for i, h := range hs[c*n : (c+1)*n] {
						local[key{h, labels[i]}]++
						total[h]++
					}
					var box []seen
					var cs []cand
					for k, m := range local {
						if m < 2 {
							continue
						}
						box = append(box, seen{k, m})
						if int(m) >= minRows && 2*m >= total[k.h] {
							cs = append(cs, cand{k, r, c, m})
						}
					}
					boxes[r*cols+c], found[r*cols+c] = box, cs
				}
			}
		}()
	}
	for r := 0; r < rows; r++ {
		next <- r
	}
	close(next)
	wg.Wait()
	// counts: for each content and label seen at least twice at a box, its
	// count at every box (the natural level of the others).
	counts := map[key][]int32{}
	var cands []cand
	for b, box := range boxes {
		for _, e := range box {
			v := counts[e.k]
			if v == nil {
				v = make([]int32, rows*cols)
				counts[e.k] = v
			}
			v[b] = e.m
		}
		cands = append(cands, found[b]...)
	}
	type hit struct {
		cand
		away int32
	}
	var hits []hit
	for _, cd := range cands {
		var away int32
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				if max(abs(r-cd.r), abs(c-cd.c)) > plantedAway {
					away = max(away, counts[cd.k][r*cols+c])
				}
			}
		}
		if float64(cd.n) >= ratio*float64(away+1) {
			hits = append(hits, hit{cd, away})
		}
	}
	// Deterministic order: by label, then place.
	sort.Slice(hits, func(a, b int) bool {
		if hits[a].k.y != hits[b].k.y {
			return hits[a].k.y < hits[b].k.y
		}
		if hits[a].r != hits[b].r {
			return hits[a].r < hits[b].r
		}
		if hits[a].c != hits[b].c {
			return hits[a].c < hits[b].c
		}
		return hits[a].k.h < hits[b].k.h
	})
	used := make([]bool, len(hits))
	for a := range hits {
		if used[a] {
			continue
		}
		// The boxes of one label near this one: one patch.
		group := []hit{hits[a]}
		used[a] = true
		for b := a + 1; b < len(hits); b++ {
			if !used[b] && hits[b].k.y == hits[a].k.y && max(abs(hits[b].r-hits[a].r), abs(hits[b].c-hits[a].c)) <= plantedAway {
				group, used[b] = append(group, hits[b]), true
			}
		}
		r0, c0, r1, c1 := rows, cols, 0, 0
		var away int32
		in := make([]int, 0)
		seen := map[int]int{}
		for _, g := range group {
			r0, c0, r1, c1 = min(r0, g.r), min(c0, g.c), max(r1, g.r+plantedSide), max(c1, g.c+plantedSide)
			away = max(away, g.away)
			for i := 0; i < n; i++ {
				if labels[i] == g.k.y && hash(i, g.r, g.c) == g.k.h {
					if seen[i] == 0 {
						in = append(in, i)
					}
					seen[i]++
				}
			}
		}
		sort.Ints(in)
		// The patch's pixels: those of a row that carries every box of it.
		src := in[0]
		for _, i := range in {
			if seen[i] == len(group) {
				src = i
				break
			}
		}
		pat := Pattern{Kind: "pasted", Row: r0, Col: c0, Size: r1 - r0, Width: c1 - c0, Box: [2]int{r1 - r0, c1 - c0}, Targeted: true, Target: hits[a].k.y}
		for ch := 0; ch < 3; ch++ {
			for y := r0; y < r1; y++ {
				for x := c0; x < c1; x++ {
					pat.Pixels = append(pat.Pixels, im.X[src*size+ch*plane+y*im.W+x])
				}
			}
		}
		for _, i := range in {
			carrier[i] = true
		}
		rep.Found = append(rep.Found, PlantedPatch{Pattern: pat, Label: hits[a].k.y, Rows: len(in), Elsewhere: int(away)})
	}
	pats := make([]Pattern, len(rep.Found))
	for i, f := range rep.Found {
		pats[i] = f.Pattern
	}
	for _, c := range carrier {
		if c {
			rep.Carriers++
		}
	}
	if len(rep.Found) == 0 {
		rep.Why = "no 3x3 content shared by one label's images at one place far more than elsewhere"
	}
	return rep, carrier, pats
}

// plantedPrime is the odd constant of the planted check's polynomial hash.
const plantedPrime = 0x9E3779B97F4A7C15

// mix64 is SplitMix64's finaliser: every bit of x moves every bit out.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xBF58476D1CE4E5B9
	x ^= x >> 27
	x *= 0x94D049BB133111EB
	return x ^ x>>31
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// planted runs PlantedPatches on the training images (planted_ratio).
func (b *bench) planted(ctx context.Context) (*Planted, []bool, []Pattern, error) {
	im, why, err := b.imagesOrWhy(ctx)
	if err != nil || why != "" {
		return &Planted{Why: why}, make([]bool, b.t.N()), nil, err
	}
	rep, carrier, pats := PlantedPatches(im, b.t.Labels, b.p.PlantedRatio)
	return rep, carrier, pats, nil
}
