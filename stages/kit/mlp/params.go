package mlp

import (
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// HeadParams are the parameters every stage that trains heads takes: embed
// it in a stage's parameters (plugin.ParamsOf flattens it) and set its
// defaults with DefaultHeadParams.
type HeadParams struct {
	Epochs int    `json:"epochs" range:"[1,)" doc:"epochs of each head the stage trains"`
	Hidden []int  `json:"hidden" range:"[1,)" doc:"hidden layer sizes of the heads"`
	Seed   uint64 `json:"seed" role:"seed" doc:"random seed"`
	Device string `json:"device" role:"device" doc:"cpu, cuda or cuda:N"`
}

// DefaultHeadParams returns the head defaults (two hidden layers of 512 and
// 256, seed 1, the CPU) with the given epochs.
func DefaultHeadParams(epochs int) HeadParams {
	return HeadParams{Epochs: epochs, Hidden: []int{512, 256}, Seed: 1, Device: "cpu"}
}

// Check validates what the declaration cannot: the device.
func (h HeadParams) Check() error { return ort.CheckDevice(h.Device) }

// Sizes returns the layer sizes of a head from d inputs to nc classes.
func (h HeadParams) Sizes(d, nc int) []int {
	return append(append([]int{d}, h.Hidden...), nc)
}

// Config returns DefaultConfig with the parameters' seed, epochs and device.
func (h HeadParams) Config() Config {
	cfg := DefaultConfig(h.Seed)
	cfg.Epochs, cfg.ORT = h.Epochs, ort.Options{Device: h.Device}
	return cfg
}

// Paired returns c for a trainer whose heads train two at a time
// (Together): its sessions get half the intra-op threads they would
// otherwise have (at least one), so that the two fits share the CPUs
// instead of contending for them (BenchmarkFitPair), and a fit left
// running alone gets them all back (AloneThreads). A fit's result does not
// depend on its thread count (TestThreadsDoNotChangeAFit).
func (c Config) Paired() Config {
	t := c.ORT.IntraOpThreads()
	c.ORT.Threads = max(1, t/2)
	c.AloneThreads = t
	return c
}
