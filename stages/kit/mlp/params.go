package mlp

import (
	"encoding/json"
	"strconv"

	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/kit/ort"
)

// HeadParams are the parameters every stage that trains heads takes; embed
// it in a stage's parameters and add HeadParamSpecs to its spec.
type HeadParams struct {
	Epochs int    `json:"epochs"`
	Hidden []int  `json:"hidden"`
	Seed   uint64 `json:"seed"`
	Device string `json:"device"`
}

// HeadParamSpecs declares HeadParams with a default number of epochs.
func HeadParamSpecs(epochs int, epochsDoc string) []plugin.ParamSpec {
	return []plugin.ParamSpec{
		{Name: "epochs", Default: json.RawMessage(strconv.Itoa(epochs)), Doc: epochsDoc},
		{Name: "hidden", Default: json.RawMessage(`[512, 256]`), Doc: "hidden layer sizes of the heads"},
		{Name: "seed", Default: json.RawMessage(`1`), Doc: "random seed"},
		{Name: "device", Default: json.RawMessage(`"cpu"`), Doc: "cpu, cuda or cuda:N"},
	}
}

// Check validates the parameters.
func (h HeadParams) Check() error {
	if h.Epochs < 1 {
		return plugin.BadInputf("parameter \"epochs\": %d, want >= 1", h.Epochs)
	}
	for _, n := range h.Hidden {
		if n < 1 {
			return plugin.BadInputf("parameter \"hidden\": %v, want positive sizes", h.Hidden)
		}
	}
	return ort.CheckDevice(h.Device)
}

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
