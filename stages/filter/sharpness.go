package filter

import "math"

// sharpness sees an image as where it is sharp and where smoothed: per pixel
// and per direction (across and down), the log ratio of the energy of
// one-pixel steps to that of two-pixel steps (both averaged over the
// planes), centred per direction, less the mean over all images. Content
// moves both energies alike; resampling (a warp's sub-pixel shifts, a
// blend's mixing) weakens the one-pixel steps in the places it touches, the
// same places in every image it is applied to.
type sharpness struct {
	im Images
	// gh x gw is the grid of pixels with two neighbours below and to the
	// right.
	gh, gw int
	mean   []float32
	buf    []float32
}

// sharpEps keeps the log ratio finite on flat areas (energies of values in
// [0, 1]).
const sharpEps = 1e-4

// newSharpness returns the sharpness view of im, or nil when its images
// are smaller than 4 x 4 or there are none.
func newSharpness(im Images) *sharpness {
	if im.H < 4 || im.W < 4 || im.N == 0 {
		return nil
	}
	s := &sharpness{im: im, gh: im.H - 2, gw: im.W - 2}
	s.buf = make([]float32, s.dim())
	s.mean = make([]float32, s.dim())
	m := make([]float64, s.dim())
	for i := 0; i < im.N; i++ {
		for j, v := range s.raw(i) {
			m[j] += float64(v)
		}
	}
	for j := range m {
		s.mean[j] = float32(m[j] / float64(im.N))
	}
	return s
}

func (s *sharpness) dim() int { return 2 * s.gh * s.gw }

func (s *sharpness) clone() imageView {
	c := *s
	c.buf = make([]float32, len(s.buf))
	return &c
}

// vec returns row i's sharpness less the mean over all images, unit length.
func (s *sharpness) vec(i int) []float32 {
	s.raw(i)
	for j, m := range s.mean {
		s.buf[j] -= m
	}
	return unit32(s.buf)
}

// raw returns row i's sharpness, each direction centred (in s's buffer).
func (s *sharpness) raw(i int) []float32 {
	x := s.im.row(i)
	H, W, C := s.im.H, s.im.W, s.im.C
	g := s.gh * s.gw
	inv := 1 / float32(C)
	for y := 0; y < s.gh; y++ {
		for xx := 0; xx < s.gw; xx++ {
			var e1x, e2x, e1y, e2y float32
			for c := 0; c < C; c++ {
				p := x[c*H*W : (c+1)*H*W]
				k := y*W + xx
				v := p[k]
				d1, d2 := p[k+1]-v, (p[k+2]-v)/2
				e1x, e2x = e1x+d1*d1, e2x+d2*d2
				d1, d2 = p[k+W]-v, (p[k+2*W]-v)/2
				e1y, e2y = e1y+d1*d1, e2y+d2*d2
			}
			o := y*s.gw + xx
			s.buf[o] = logRatio(e1x*inv, e2x*inv)
			s.buf[g+o] = logRatio(e1y*inv, e2y*inv)
		}
	}
	for _, half := range [][]float32{s.buf[:g], s.buf[g:]} {
		var m float64
		for _, v := range half {
			m += float64(v)
		}
		m /= float64(len(half))
		for j := range half {
			half[j] -= float32(m)
		}
	}
	return s.buf
}

// logRatio is log((a + eps) / (b + eps)).
func logRatio(a, b float32) float32 {
	return float32(math.Log(float64(a+sharpEps) / float64(b+sharpEps)))
}
