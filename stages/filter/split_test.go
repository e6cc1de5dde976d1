package filter_test

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tcore-dev/tcore/stages/filter"
)

// splitData makes classes x per images of 32 x 32: each a smooth gradient
// of its class's colours plus its own fine noise (the detail natural images
// have), and, when plant is set, planted more images of the other classes'
// content carrying plant's pattern and labelled 0 (a dirty-label attack).
// It returns the images, the labels and which rows carry the pattern.
func splitData(classes, per, planted int, plant func(img []float32)) (filter.Images, []int32, []bool) {
	return splitDataTextured(classes, per, planted, plant, false)
}

// splitDataTextured is splitData; with textured, every image also carries
// its class's own fixed fine texture (a 2-pixel checkerboard whose phase
// and strength follow the class), so that the class's own rows share a
// pattern as strongly as a trigger's carriers do.
func splitDataTextured(classes, per, planted int, plant func(img []float32), textured bool) (filter.Images, []int32, []bool) {
	const h, w = 32, 32
	rng := rand.New(rand.NewPCG(7, 11))
	n := classes*per + planted
	im := filter.Images{X: make([]float32, n*3*h*w), N: n, C: 3, H: h, W: w}
	labels := make([]int32, n)
	carries := make([]bool, n)
	for i := 0; i < n; i++ {
		c := i % classes
		img := im.X[i*3*h*w : (i+1)*3*h*w]
		for ch := 0; ch < 3; ch++ {
			a := 0.2 + 0.6*float64((c*7+ch*3)%10)/10
			gx, gy := rng.Float64()-0.5, rng.Float64()-0.5
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					v := a + 0.3*(gx*float64(x)+gy*float64(y))/float64(w) + 0.03*rng.NormFloat64()
					if textured && (x/2+y/2+c)%2 == 0 {
						v -= 0.1 + 0.02*float64(c%3)
					}
					img[ch*h*w+y*w+x] = float32(min(1, max(0, v)))
				}
			}
		}
		labels[i] = int32(c)
		if i >= classes*per {
			plant(img)
			labels[i], carries[i] = 0, true
		}
	}
	return im, labels, carries
}

// pasteChecker pastes a 4x4 black-and-white checkerboard near the bottom
// left corner of img (3 planes of 32 x 32).
func pasteChecker(img []float32) {
	for ch := 0; ch < 3; ch++ {
		for y := 26; y < 30; y++ {
			for x := 2; x < 6; x++ {
				img[ch*32*32+y*32+x] = float32((x + y) % 2)
			}
		}
	}
}

// warp resamples img (3 planes of 32 x 32) bilinearly along a fixed smooth
// field of sub-pixel shifts (up to amp pixels), as WaNet does: no pattern is
// added, the same places of every warped image are smoothed.
func warp(amp float64) func(img []float32) {
	return func(img []float32) {
		const h, w = 32, 32
		src := append([]float32(nil), img...)
		for ch := 0; ch < 3; ch++ {
			p := src[ch*h*w : (ch+1)*h*w]
			for y := 0; y < h; y++ {
				for x := 0; x < w; x++ {
					fx := float64(x) + amp*math.Sin(2*math.Pi*float64(y)/13+0.7)
					fy := float64(y) + amp*math.Cos(2*math.Pi*float64(x)/11+1.9)
					fx, fy = min(max(fx, 0), w-1.001), min(max(fy, 0), h-1.001)
					x0, y0 := int(fx), int(fy)
					ax, ay := float32(fx-float64(x0)), float32(fy-float64(y0))
					at := func(yy, xx int) float32 { return p[yy*w+xx] }
					v := (1-ay)*((1-ax)*at(y0, x0)+ax*at(y0, x0+1)) + ay*((1-ax)*at(y0+1, x0)+ax*at(y0+1, x0+1))
					img[ch*h*w+y*w+x] = v
				}
			}
		}
	}
}

// TestSplitClassesFindsAPlantedTrigger: a noise blend, a checkerboard patch
// or a warp planted in images relabelled to one class is found, in the view
// that sees it, with its carriers and nothing else; clean classes are not
// flagged, and each view is off at its parameter 0.
func TestSplitClassesFindsAPlantedTrigger(t *testing.T) {
	noise := make([]float32, 3*32*32)
	nr := rand.New(rand.NewPCG(3, 5))
	for i := range noise {
		noise[i] = nr.Float32()
	}
	blend := func(img []float32) {
		for j := range img {
			img[j] = 0.85*img[j] + 0.15*noise[j]
		}
	}
	p := filter.SplitParams{Z: 5, Gap: 8, Sigma: 1, K: 6, MinRows: 40}
	detailOnly, sharpOnly := p, p
	detailOnly.Gap, sharpOnly.Z = 0, 0
	for _, tc := range []struct {
		name     string
		planted  int
		plant    func([]float32)
		textured bool
		p        filter.SplitParams
		// views are the views expected to flag class 0 (none: nothing
		// flagged).
		views []string
	}{
		{"blend 0.15", 120, blend, false, p, []string{"detail", "sharpness"}},
		{"blend 0.15, detail only", 120, blend, false, detailOnly, []string{"detail"}},
		{"checkerboard 4x4", 120, pasteChecker, false, p, []string{"detail", "sharpness"}},
		{"a few blended", 30, blend, false, p, []string{"detail", "sharpness"}},
		// The planted rows are a third of the class, whose own rows share
		// a texture: the class's mean detail is theirs, and the carriers
		// are still the planted rows, not the class's own.
		{"checkerboard among textured classes", 30, pasteChecker, true, p, []string{"detail", "sharpness"}},
		{"warp 0.5 px", 120, warp(0.5), false, p, []string{"sharpness"}},
		{"warp 0.5 px, sharpness only", 120, warp(0.5), false, sharpOnly, []string{"sharpness"}},
		{"warp 0.5 px, detail only", 120, warp(0.5), false, detailOnly, nil},
		{"clean", 0, nil, false, p, nil},
		{"clean, textured classes", 0, nil, true, p, nil},
		{"off", 120, blend, false, filter.SplitParams{Sigma: 1, K: 6, MinRows: 40}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, labels, carries := splitDataTextured(8, 60, tc.planted, tc.plant, tc.textured)
			rep, carrier, pats, err := filter.SplitClasses(im, labels, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			// A class of identical textures may split without any row
			// carrying a pattern beyond it: flagged, nothing marked.
			slack := 0
			if tc.textured {
				slack = 2
			}
			if len(tc.views) == 0 {
				if rep.Carriers != 0 || len(pats) != 0 || (!tc.textured && (len(rep.Flagged) != 0 || rep.Why == "")) {
					t.Fatalf("flagged %+v, %d carriers, %d patterns, why %q; want nothing flagged and a reason", rep.Flagged, rep.Carriers, len(pats), rep.Why)
				}
				return
			}
			var views []string
			for _, f := range rep.Flagged {
				if f.Class != 0 && f.Carriers > 0 {
					t.Fatalf("class %d flagged in its %s with %d carriers", f.Class, f.View, f.Carriers)
				}
				if f.Class == 0 {
					views = append(views, f.View)
				}
				// Every flagged class names the bar it reached.
				fig, bar := f.Z, tc.p.Z
				if f.View == "sharpness" {
					fig, bar = f.Gap, tc.p.Bar(f.Rows, rep.MedianGap)
				}
				if f.Bar != bar || f.Figure() != fig || fig < f.Bar {
					t.Fatalf("class %d flagged in its %s at %.2f (Figure %.2f) against bar %.2f, want bar %.2f", f.Class, f.View, fig, f.Figure(), f.Bar, bar)
				}
			}
			if !slices.Equal(views, tc.views) {
				t.Fatalf("class 0 flagged in %v, want %v (%+v)", views, tc.views, rep.Flagged)
			}
			// A pattern in the pixels comes from the detail view only.
			wantPats := 0
			if slices.Contains(tc.views, "detail") {
				wantPats = 1
			}
			if len(pats) != wantPats {
				t.Fatalf("%d patterns, want %d", len(pats), wantPats)
			}
			wrong := 0
			for i := range carrier {
				switch {
				case carries[i] && !carrier[i]:
					t.Fatalf("planted row %d not a carrier", i)
				case carrier[i] && (!carries[i]) && labels[i] != 0:
					t.Fatalf("row %d of class %d a carrier", i, labels[i])
				case carrier[i] && !carries[i]:
					wrong++
				}
			}
			if wrong > slack {
				t.Fatalf("%d of class 0's own rows are carriers, want at most %d", wrong, slack)
			}
			if wantPats == 1 && (pats[0].Kind != "delta" || len(pats[0].Delta) != 3*32*32) {
				t.Fatalf("pattern %q of %d values, want a delta of %d", pats[0].Kind, len(pats[0].Delta), 3*32*32)
			}
			// The pattern names the class it was planted in, so that
			// augment rows never paint it on that class's images.
			if wantPats == 1 && (!pats[0].Targeted || pats[0].Target != 0) {
				t.Fatalf("pattern targets class %d (targeted %v), want class 0", pats[0].Target, pats[0].Targeted)
			}
		})
	}
}

// TestSplitClassesRejectsBadShapes: labels or values that do not match the
// images are an error, not a silent partial search.
func TestSplitClassesRejectsBadShapes(t *testing.T) {
	im, labels, _ := splitData(4, 10, 0, nil)
	p := filter.SplitParams{Z: 5, Sigma: 1, K: 6}
	if _, _, _, err := filter.SplitClasses(im, labels[1:], p); err == nil {
		t.Fatal("one label short: no error")
	}
	im.X = im.X[:len(im.X)-1]
	if _, _, _, err := filter.SplitClasses(im, labels, p); err == nil {
		t.Fatal("one value short: no error")
	}
}

// SplitClasses on 8 classes of 60 images, 90 more of which carry a 4x4
// checkerboard and the label 0: both views find the same carriers, each
// class's figure (SplitClass.Figure) over its bar.
func ExampleSplitClasses() {
	im, labels, _ := splitData(8, 60, 90, func(img []float32) {
		for ch := 0; ch < 3; ch++ {
			for y := 0; y < 4; y++ {
				for x := 0; x < 4; x++ {
					img[ch*32*32+y*32+x] = float32((x + y) % 2)
				}
			}
		}
	})
	rep, _, pats, err := filter.SplitClasses(im, labels, filter.SplitParams{Z: 5, Gap: 8, Sigma: 1, K: 6, MinRows: 40})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, f := range rep.Flagged {
		fmt.Printf("class %d, %s: %d of its %d rows carry a pattern (reached its bar: %v)\n", f.Class, f.View, f.Carriers, f.Rows, f.Figure() >= f.Bar)
	}
	fmt.Println(rep.Carriers, "carriers;", len(pats), "pattern:", pats[0].Kind)
	// Output:
	// class 0, detail: 90 of its 150 rows carry a pattern (reached its bar: true)
	// class 0, sharpness: 90 of its 150 rows carry a pattern (reached its bar: true)
	// 90 carriers; 1 pattern: delta
}

// TestSplitGapRows: a weak warp (0.2 px) in 600 images relabelled to one
// class splits that 660-row class's sharpness by a gap under split_gap's 8,
// which the bar for large classes (split_gap_rows) reaches, with the warped
// rows as carriers (all but 1%, and at most 2 of the class's own); the same
// warp in 120 images (a 180-row class) stays under its higher bar, and
// clean 600-row classes are not flagged.
func TestSplitGapRows(t *testing.T) {
	fixed := filter.SplitParams{Gap: 8, Sigma: 1, K: 5, MinRows: 40}
	byRows := fixed
	byRows.GapRows, byRows.GapFloor = 45, 1
	for _, tc := range []struct {
		name         string
		per, planted int
		plant        func([]float32)
		p            filter.SplitParams
		flagged      bool
	}{
		{"weak warp in a large class, one bar", 60, 600, warp(0.2), fixed, false},
		{"weak warp in a large class, bar by rows", 60, 600, warp(0.2), byRows, true},
		{"weak warp in a small class, bar by rows", 60, 120, warp(0.2), byRows, false},
		{"clean large classes, bar by rows", 600, 0, nil, byRows, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			im, labels, carries := splitData(8, tc.per, tc.planted, tc.plant)
			rep, carrier, _, err := filter.SplitClasses(im, labels, tc.p)
			if err != nil {
				t.Fatal(err)
			}
			if got := len(rep.Flagged) > 0; got != tc.flagged {
				t.Fatalf("flagged %+v (nearest unflagged %+v), want flagged %v", rep.Flagged, rep.Nearest, tc.flagged)
			}
			if rep.Nearest == nil && len(rep.Flagged) < 8 {
				t.Fatalf("no nearest unflagged class reported")
			}
			if !tc.flagged {
				if rep.Carriers != 0 {
					t.Fatalf("%d carriers with nothing flagged", rep.Carriers)
				}
				return
			}
			if f := rep.Flagged[0]; len(rep.Flagged) != 1 || f.Class != 0 || f.View != "sharpness" || f.Gap >= tc.p.Gap || f.Gap < f.Bar {
				t.Fatalf("flagged %+v, want class 0 alone, in its sharpness, at a gap between its bar and %v", rep.Flagged, tc.p.Gap)
			}
			own, missed := 0, 0
			for i := range carrier {
				switch {
				case carries[i] && !carrier[i]:
					missed++
				case carrier[i] && !carries[i] && labels[i] != 0:
					t.Fatalf("row %d of class %d a carrier", i, labels[i])
				case carrier[i] && !carries[i]:
					own++
				}
			}
			if own > 2 || missed > tc.planted/100 {
				t.Fatalf("%d of class 0's own %d rows are carriers, %d of the %d warped rows are not; want at most 2 and 1%%", own, tc.per, missed, tc.planted)
			}
		})
	}
}

// TestSplitBar: the sharpness bar is split_gap up to split_gap_rows rows and
// for every class when that is 0, then falls with the square root of the
// rows to the classes' median plus split_gap_floor.
func TestSplitBar(t *testing.T) {
	p := filter.SplitParams{Gap: 8, GapRows: 45, GapFloor: 1}
	for _, tc := range []struct {
		name   string
		p      filter.SplitParams
		n      int
		median float64
		want   float64
	}{
		{"at split_gap_rows", p, 45, 2.5, 8},
		{"small class", p, 20, 2.5, 8},
		{"four times the rows: half the way above the median", p, 180, 2.5, 2.5 + 5.5/2},
		{"many rows: the floor", p, 50000, 2.5, 3.5},
		{"off", filter.SplitParams{Gap: 8, GapFloor: 1}, 50000, 2.5, 8},
		{"median at the bar", p, 5000, 9, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Bar(tc.n, tc.median); math.Abs(got-tc.want) > 1e-9 {
				t.Fatalf("Bar(%d, %v) = %v, want %v", tc.n, tc.median, got, tc.want)
			}
		})
	}
}

// TestSplitGapK: a warp whose strength varies from image to image (as a
// real warp's mark varies with what it moves) leaves its weaker carriers'
// cosines near the class's own rows; split_gap_k puts the sharpness view's
// cut lower than split_k and takes more of them, and no clean row of
// another class, while split_gap_k 0 is split_k.
func TestSplitGapK(t *testing.T) {
	amp := 0
	// Seven in ten warped rows at 0.3 pixels, three at 0.1.
	strength := func(i int) float64 {
		if i%10 < 7 {
			return 0.3
		}
		return 0.1
	}
	varied := func(img []float32) {
		amp++
		warp(strength(amp))(img)
	}
	im, labels, carries := splitData(8, 60, 600, varied)
	count := func(p filter.SplitParams) (found, own int) {
		t.Helper()
		rep, carrier, _, err := filter.SplitClasses(im, labels, p)
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Flagged) != 1 || rep.Flagged[0].View != "sharpness" || rep.Flagged[0].Class != 0 {
			t.Fatalf("flagged %+v (nearest %+v), want class 0 alone in its sharpness", rep.Flagged, rep.Nearest)
		}
		for i, c := range carrier {
			switch {
			case c && carries[i]:
				found++
			case c && labels[i] != 0:
				t.Fatalf("row %d of class %d a carrier", i, labels[i])
			case c:
				own++
			}
		}
		return found, own
	}
	base := filter.SplitParams{Gap: 8, GapRows: 45, GapFloor: 1, Sigma: 1, K: 5, MinRows: 40}
	at5, _ := count(base)
	same := base
	same.GapK = 5
	if got, _ := count(same); got != at5 {
		t.Fatalf("split_gap_k 5 found %d carriers, split_k 5 alone %d", got, at5)
	}
	lower := base
	lower.GapK = 3
	at3, own := count(lower)
	t.Logf("warped rows found: %d at split_k 5, %d at split_gap_k 3 (of 600); class 0's own rows taken: %d", at5, at3, own)
	if at5 > 570 || at3 < at5+30 || own > 2 {
		t.Fatalf("found %d warped rows at 5 and %d at 3, %d own rows at 3; want fewer than 570 at 5, 30 more at 3 and at most 2 own", at5, at3, own)
	}

	// A pasted checkerboard: both views flag its class, and the detail
	// view's cut stands in the sharpness view too, so split_gap_k changes
	// no carrier.
	im, labels, _ = splitData(8, 60, 300, pasteChecker)
	both := filter.SplitParams{Z: 5, Gap: 8, GapRows: 45, GapFloor: 1, Sigma: 1, K: 5, MinRows: 40}
	views := func(p filter.SplitParams) ([]bool, []string) {
		t.Helper()
		rep, carrier, _, err := filter.SplitClasses(im, labels, p)
		if err != nil {
			t.Fatal(err)
		}
		var v []string
		for _, f := range rep.Flagged {
			v = append(v, fmt.Sprintf("%d %s", f.Class, f.View))
		}
		return carrier, v
	}
	before, v := views(both)
	if !slices.Equal(v, []string{"0 detail", "0 sharpness"}) {
		t.Fatalf("flagged %v, want class 0 in both views", v)
	}
	both.GapK = 1
	if after, _ := views(both); !slices.Equal(before, after) {
		t.Fatalf("split_gap_k changed the carriers of a class the detail view flagged")
	}
}
