package filter_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/tcore-dev/tcore/stages/filter"
)

// paste paints a size x size patch at (r, c) of a 32 x 32 image: a
// black-and-white checkerboard, or one colour.
func paste(img []float32, r, c, size int, checker bool, col [3]float32) {
	for ch := 0; ch < 3; ch++ {
		for y := r; y < r+size; y++ {
			for x := c; x < c+size; x++ {
				v := col[ch]
				if checker {
					v = float32((x + y) % 2)
				}
				img[ch*32*32+y*32+x] = v
			}
		}
	}
}

// TestPlantedPatches: a patch pasted into the images of one label is found
// and exactly its carriers are flagged; natural repeats (a white sky over
// one class's images, a watermark on every image) and clean images are not.
func TestPlantedPatches(t *testing.T) {
	yellow := [3]float32{1, 1, 0}
	white := [3]float32{1, 1, 1}
	cases := []struct {
		name    string
		planted int
		plant   func(img []float32)
		// natural changes every image i of label l (sky, watermark).
		natural func(img []float32, l int32)
		found   int // patches found
		at      [2]int
	}{
		{name: "clean", plant: nil, found: 0},
		{name: "checker 3x3 at a corner", planted: 40, plant: func(img []float32) { paste(img, 29, 29, 3, true, white) }, found: 1, at: [2]int{29, 29}},
		{name: "yellow 4x4 at the top left", planted: 40, plant: func(img []float32) { paste(img, 0, 0, 4, false, yellow) }, found: 1, at: [2]int{0, 0}},
		{name: "checker 6x6 in the centre, rows of other content", planted: 25, plant: func(img []float32) { paste(img, 13, 13, 6, true, white) }, found: 1, at: [2]int{13, 13}},
		{name: "a white sky over one class", natural: func(img []float32, l int32) {
			if l == 1 {
				for y := 0; y < 6; y++ {
					for x := 0; x < 32; x++ {
						for ch := 0; ch < 3; ch++ {
							img[ch*32*32+y*32+x] = 1
						}
					}
				}
			}
		}, found: 0},
		{name: "a watermark on every image", natural: func(img []float32, _ int32) { paste(img, 0, 0, 4, false, yellow) }, found: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plant := tc.plant
			if plant == nil {
				plant = func([]float32) {}
			}
			im, labels, carries := splitData(10, 60, tc.planted, plant)
			if tc.natural != nil {
				for i := 0; i < im.N; i++ {
					tc.natural(im.X[i*3*32*32:(i+1)*3*32*32], labels[i])
				}
			}
			rep, carrier, pats := filter.PlantedPatches(im, labels, 5)
			if len(rep.Found) != tc.found || len(pats) != tc.found {
				t.Fatalf("found %d patches (%d patterns), want %d: %+v", len(rep.Found), len(pats), tc.found, rep.Found)
			}
			if tc.found == 0 {
				if rep.Carriers != 0 || slices.Contains(carrier, true) || rep.Why == "" {
					t.Fatalf("carriers %d, why %q: want none, and why", rep.Carriers, rep.Why)
				}
				return
			}
			if !slices.Equal(carrier, carries) {
				t.Fatalf("carriers differ from the planted rows: %d flagged, %d planted", rep.Carriers, tc.planted)
			}
			f := rep.Found[0]
			if f.Label != 0 || [2]int{f.Pattern.Row, f.Pattern.Col} != tc.at || f.Pattern.Kind != "pasted" || !f.Pattern.Targeted {
				t.Fatalf("found %+v at (%d,%d): want label 0 at %v, targeted", f, f.Pattern.Row, f.Pattern.Col, tc.at)
			}
			// The pattern pastes the patch: painted on a clean image, it is
			// the planted one pixel for pixel.
			a := slices.Clone(im.X[:3*32*32])
			b := slices.Clone(a)
			tc.plant(a)
			f.Pattern.Apply(b, 32, 32)
			if !slices.Equal(a, b) {
				t.Fatalf("the found pattern (%s) does not repaint the planted patch", f.Pattern)
			}
		})
	}
}

// TestPlantedRatio: the ratio is the bar a planted count must reach over
// the natural level: a patch also pasted (on the same label's images) at a
// place far away is found at ratio 2 and not at ratio 5.
func TestPlantedRatio(t *testing.T) {
	white := [3]float32{1, 1, 1}
	i := 0
	im, labels, _ := splitData(10, 60, 40, func(img []float32) {
		// 40 rows carry it at (29,29); 10 of them also at (0,0).
		paste(img, 29, 29, 3, true, white)
		if i%4 == 0 {
			paste(img, 0, 0, 3, true, white)
		}
		i++
	})
	for _, tc := range []struct {
		ratio float64
		found bool
	}{{2, true}, {5, false}} {
		t.Run(fmt.Sprint(tc.ratio), func(t *testing.T) {
			rep, _, _ := filter.PlantedPatches(im, labels, tc.ratio)
			got := false
			for _, f := range rep.Found {
				got = got || (f.Pattern.Row == 29 && f.Pattern.Col == 29 && f.Elsewhere == 10)
			}
			if got != tc.found {
				t.Fatalf("ratio %g: found %+v, want the (29,29) patch found: %v", tc.ratio, rep.Found, tc.found)
			}
		})
	}
}

// A checkerboard pasted into 40 images labelled 0 is found where it was
// pasted, with its carriers.
func ExamplePlantedPatches() {
	im, labels, _ := splitData(10, 60, 40, func(img []float32) { paste(img, 29, 0, 3, true, [3]float32{}) })
	rep, carrier, pats := filter.PlantedPatches(im, labels, 10)
	fmt.Println(len(pats), pats[0], "label", rep.Found[0].Label, "carriers", rep.Carriers, carrier[len(carrier)-1])
	// Output: 1 pasted 3x3 at (29,0) label 0 carriers 40 true
}
