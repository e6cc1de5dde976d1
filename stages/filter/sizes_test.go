package filter

import "testing"

// Patch sizes follow the data's resolution: scaled up when the images are
// at least 1.5 times smaller than the encoder's input, capped at the
// input, unchanged otherwise.
func TestScaleSizes(t *testing.T) {
	cases := []struct {
		name         string
		h, w, dh, dw int
		want         [2]int
		scale        float64
	}{
		{"same size", 32, 32, 32, 32, [2]int{3, 10}, 1},
		{"data larger", 32, 32, 64, 64, [2]int{3, 10}, 1},
		{"a little smaller", 32, 32, 25, 25, [2]int{3, 10}, 1},
		{"32-px data, 224-px model", 224, 224, 32, 32, [2]int{21, 70}, 7},
		{"16-px data, 32-px model", 32, 32, 16, 16, [2]int{6, 20}, 2},
		{"capped at the input", 32, 32, 4, 4, [2]int{24, 32}, 8},
		{"no size known", 224, 224, 0, 0, [2]int{3, 10}, 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, scale := scaleSizes([2]int{3, 10}, tc.h, tc.w, tc.dh, tc.dw)
			if got != tc.want || scale != tc.scale {
				t.Fatalf("sizes %v scale %g, want %v and %g", got, scale, tc.want, tc.scale)
			}
		})
	}
}

// A large-input encoder's scan collapses scan_images_large images; the
// 32-px encoders every default was tuned on keep scan_images.
func TestScanImages(t *testing.T) {
	cases := []struct {
		name string
		h, w int
		want int
	}{
		{"32 px", 32, 32, 64},
		{"just under", 95, 200, 64},
		{"at the side", 96, 96, 32},
		{"224 px", 224, 224, 32},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := scanImages(defaults, tc.h, tc.w); got != tc.want {
				t.Fatalf("%d images, want %d", got, tc.want)
			}
		})
	}
}
