package arrowio

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"strconv"
)

// ErrNotImage is wrapped by errors about bytes that are not a PNG or JPEG
// image.
var ErrNotImage = errors.New("not a PNG or JPEG image")

func sniff(data []byte) (string, error) {
	switch {
	case bytes.HasPrefix(data, []byte("\x89PNG\r\n\x1a\n")):
		return "png", nil
	case bytes.HasPrefix(data, []byte{0xff, 0xd8}):
		return "jpeg", nil
	}
	return "", ErrNotImage
}

// DecodeConfig reads only the header of a PNG or JPEG image and returns its
// size and format ("png" or "jpeg").
func DecodeConfig(data []byte) (image.Config, string, error) {
	format, err := sniff(data)
	if err != nil {
		return image.Config{}, "", err
	}
	var cfg image.Config
	if format == "png" {
		cfg, err = png.DecodeConfig(bytes.NewReader(data))
	} else {
		cfg, err = jpeg.DecodeConfig(bytes.NewReader(data))
	}
	if err != nil {
		return cfg, format, fmt.Errorf("%w: %s header: %v", ErrNotImage, format, err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		// A PNG header may declare a zero side: no pixels to embed, and a
		// resize would divide by zero.
		return cfg, format, fmt.Errorf("%w: a %dx%d %s has no pixels", ErrNotImage, cfg.Width, cfg.Height, format)
	}
	return cfg, format, nil
}

// MaxPixelsEnv is the environment variable that raises the largest image
// tcore decodes or an encoder may declare (height x width, default 4096 x
// 4096): a few hundred bytes of PNG can declare 50,000 x 50,000 pixels of
// one colour, which would take 10 GB and minutes to decode.
const MaxPixelsEnv = "TCORE_MAX_IMAGE_PIXELS"

// MaxImagePixels returns the largest height x width that DecodeImage
// decodes: MaxPixelsEnv when it holds a positive integer, else 4096 x 4096.
func MaxImagePixels() int64 {
	if v, err := strconv.ParseInt(os.Getenv(MaxPixelsEnv), 10, 64); err == nil && v > 0 {
		return v
	}
	return 4096 * 4096
}

// DecodeImage decodes PNG or JPEG bytes of at most MaxImagePixels pixels.
func DecodeImage(data []byte) (image.Image, error) {
	cfg, format, err := DecodeConfig(data)
	if err != nil {
		return nil, err
	}
	if px, limit := int64(cfg.Width)*int64(cfg.Height), MaxImagePixels(); px > limit {
		return nil, fmt.Errorf("a %dx%d %s image, more than the %d pixels tcore decodes (%s raises the bound)", cfg.Width, cfg.Height, format, limit, MaxPixelsEnv)
	}
	var img image.Image
	if format == "png" {
		img, err = png.Decode(bytes.NewReader(data))
	} else {
		img, err = jpeg.Decode(bytes.NewReader(data))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrNotImage, format, err)
	}
	return img, nil
}

// IsGray reports whether img has a single grey channel.
func IsGray(img image.Image) bool {
	switch img.(type) {
	case *image.Gray, *image.Gray16:
		return true
	}
	return img.ColorModel() == color.GrayModel || img.ColorModel() == color.Gray16Model
}

// ToCHW writes img into dst as float32 planes in channel-height-width order,
// R, G, B, with values in [0, 1] (grey images fill all three planes). dst
// must hold 3*W*H values; ToCHW panics otherwise. It does not resize.
func ToCHW(dst []float32, img image.Image) {
	r := img.Bounds()
	w, h := r.Dx(), r.Dy()
	plane := w * h
	if len(dst) != 3*plane {
		panic(fmt.Sprintf("arrowio: ToCHW: len(dst)=%d, want %d", len(dst), 3*plane))
	}
	const s = 1.0 / 255
	switch m := img.(type) {
	case *image.YCbCr:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				yi := m.YOffset(r.Min.X+x, r.Min.Y+y)
				ci := m.COffset(r.Min.X+x, r.Min.Y+y)
				cr, cg, cb := color.YCbCrToRGB(m.Y[yi], m.Cb[ci], m.Cr[ci])
				o := y*w + x
				dst[o] = float32(cr) * s
				dst[plane+o] = float32(cg) * s
				dst[2*plane+o] = float32(cb) * s
			}
		}
	case *image.NRGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < w; x++ {
				o := y*w + x
				dst[o] = float32(row[4*x]) * s
				dst[plane+o] = float32(row[4*x+1]) * s
				dst[2*plane+o] = float32(row[4*x+2]) * s
			}
		}
	case *image.RGBA:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < w; x++ {
				o := y*w + x
				dst[o] = float32(row[4*x]) * s
				dst[plane+o] = float32(row[4*x+1]) * s
				dst[2*plane+o] = float32(row[4*x+2]) * s
			}
		}
	case *image.Gray:
		for y := 0; y < h; y++ {
			row := m.Pix[y*m.Stride:]
			for x := 0; x < w; x++ {
				o := y*w + x
				v := float32(row[x]) * s
				dst[o], dst[plane+o], dst[2*plane+o] = v, v, v
			}
		}
	default:
		for y := 0; y < h; y++ {
			for x := 0; x < w; x++ {
				c := color.NRGBAModel.Convert(img.At(r.Min.X+x, r.Min.Y+y)).(color.NRGBA)
				o := y*w + x
				dst[o] = float32(c.R) * s
				dst[plane+o] = float32(c.G) * s
				dst[2*plane+o] = float32(c.B) * s
			}
		}
	}
}
