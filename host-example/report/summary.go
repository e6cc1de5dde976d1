package report

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/host-example/dag"
	"github.com/tcore-dev/tcore/plugin"
	"github.com/tcore-dev/tcore/stages/evaluate"
	"github.com/tcore-dev/tcore/stages/filter"
)

// Summary is what one run found, typed: report.json, and what the CLI, the
// benchmark and the demo read.
type Summary struct {
	Pipeline    string             `json:"pipeline"`
	Seed        int64              `json:"seed"`
	ACC         *float64           `json:"acc"`
	ASR         *float64           `json:"asr"`
	Evaluation  *evaluate.Result   `json:"evaluation,omitempty"`
	Samples     Counts             `json:"samples"`
	Channels    ChannelCounts      `json:"channels"`
	EncoderScan *filter.Scan       `json:"encoder_scan"`
	Classes     *Classes           `json:"classes,omitempty"`
	Inputs      map[string]string  `json:"inputs"`
	Encoder     string             `json:"encoder,omitempty"`
	Model       string             `json:"model,omitempty"`
	TimingsS    map[string]float64 `json:"timings_s"`
	Reused      []string           `json:"reused_nodes"`
	Nodes       map[string]Node    `json:"nodes"`
	// Reference is the none baseline trained beside the run (tcore run
	// --reference), or nil.
	Reference *Reference `json:"reference,omitempty"`
	// Seconds is the run's wall time (the cached nodes' included as
	// reused).
	Seconds float64 `json:"seconds"`
}

// Reference is the none baseline measured inside a run: one head on every
// training row over the run's own (unfiltered) embedding, evaluated on the
// same test set and trigger.
type Reference struct {
	ACC     *float64 `json:"acc"`
	ASR     *float64 `json:"asr,omitempty"`
	Model   string   `json:"model"`
	Seconds float64  `json:"seconds"`
}

// Counts are the rows of the training set and of each selected set.
type Counts struct {
	Total   int `json:"total"`
	Seed    int `json:"seed,omitempty"`
	Trusted int `json:"trusted,omitempty"`
	Kept    int `json:"kept,omitempty"`
}

// Classes are the classes of the training set, as checked before the
// run: how many the head has, the rows of each, and those with fewer rows
// than a head can learn from (Small).
type Classes struct {
	N        int   `json:"n"`
	Declared bool  `json:"declared,omitempty"` // N came from --classes
	Rows     []int `json:"rows"`
	Small    []int `json:"small,omitempty"`
	// TinyImages counts training images under TinyImage pixels on a
	// side, which the encoder only sees blown up; Smallest is the
	// smallest of them ("1x1").
	TinyImages int    `json:"tiny_images,omitempty"`
	Smallest   string `json:"smallest,omitempty"`
}

// TinyImage is the side, in pixels, below which a training image is
// counted (and warned about) as tiny.
const TinyImage = 8

// ChannelCounts are the probed channels and those switched off.
type ChannelCounts struct {
	Total    int `json:"total"`
	Filtered int `json:"filtered"`
}

// Node is one node of the run: its stage, metrics and outputs.
type Node struct {
	Stage   string                `json:"stage"`
	Metrics plugin.Metrics        `json:"metrics"`
	Outputs map[string]dag.Output `json:"outputs"`
}

// Set returns the purity figures of a selected set (seed, trusted, kept)
// when ground truth was given.
func (s *Summary) Set(name string) (evaluate.Set, bool) {
	if s.Evaluation == nil || s.Evaluation.Sets == nil {
		return evaluate.Set{}, false
	}
	v, ok := s.Evaluation.Sets[name]
	return v, ok
}

// UncachedSeconds is the run's wall time with each reused node's own
// recorded time added: about what the run takes without the node cache,
// the time a benchmark reports for it.
func (s *Summary) UncachedSeconds() float64 {
	t := s.Seconds
	for _, id := range s.Reused {
		t += s.TimingsS[id]
	}
	return t
}

// NewSummary fills a summary from a finished DAG run: timings, reused
// nodes, node metrics and outputs, and the encoder scan.
func NewSummary(pipeline string, res *dag.Result) *Summary {
	s := &Summary{Pipeline: pipeline, TimingsS: map[string]float64{}, Reused: []string{}, Nodes: map[string]Node{}, Inputs: map[string]string{}}
	for _, id := range res.Order {
		n := res.Nodes[id]
		s.TimingsS[id] = n.Seconds
		if n.Cached {
			s.Reused = append(s.Reused, id)
		}
		s.Nodes[id] = Node{Stage: n.Stage, Metrics: n.Metrics, Outputs: n.Outputs}
		if raw, ok := n.Metrics["encoder_scan"]; ok {
			b, _ := json.Marshal(raw)
			var sc filter.Scan
			if json.Unmarshal(b, &sc) == nil {
				s.EncoderScan = &sc
			}
		}
	}
	return s
}

// SummaryFile is the summary's file in a run folder.
const SummaryFile = "report.json"

// The other files a run writes into its folder once its pipeline finished.
const (
	PageFile     = "report.html"
	SamplesFile  = "samples.parquet"
	ChannelsFile = "channels.parquet"
)

// RunFiles are the files a finished run writes into its folder (beside
// the nodes and the exported model): a new run removes them first, so a
// failed run never shows an older run's report.
var RunFiles = []string{SummaryFile, PageFile, SamplesFile, ChannelsFile, LogFile}

// LogFile is the run's log (what tcore run printed, without the progress
// bars), written when the run finishes.
const LogFile = "tcore.log"

// ReadSummary reads a run folder's report.json.
func ReadSummary(dir string) (*Summary, error) {
	b, err := os.ReadFile(filepath.Join(dir, SummaryFile))
	if err != nil {
		return nil, err
	}
	var s Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, SummaryFile), err)
	}
	return &s, nil
}

// WriteSummary writes s as the run folder's report.json, atomically.
func WriteSummary(dir string, s *Summary) error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	return arrowio.WriteFileAtomic(filepath.Join(dir, SummaryFile), append(b, '\n'))
}

// NodeIDs returns the run's node ids in sorted order, for walks over
// Nodes whose output must not depend on map order.
func (s *Summary) NodeIDs() []string {
	ids := make([]string, 0, len(s.Nodes))
	for id := range s.Nodes {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids
}

// Steps returns how long each step of node id took, as the stage timed
// them in its metrics ("steps": the filter's), in the order they ran;
// nil when the node reported none. Metrics that came through a plugin
// hold them as []any, those of a stage in process typed.
func (s *Summary) Steps(id string) []filter.Step {
	raw, ok := s.Nodes[id].Metrics["steps"]
	if !ok {
		return nil
	}
	b, err := json.Marshal(raw)
	if err != nil {
		return nil
	}
	var st []filter.Step
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return st
}

// Slowest returns the n longest of steps, longest first (ties in run
// order).
func Slowest(steps []filter.Step, n int) []filter.Step {
	out := append([]filter.Step(nil), steps...)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seconds > out[j].Seconds })
	if len(out) > n {
		out = out[:n]
	}
	return out
}

// Warning is one warning a stage returned in its metrics ("warnings").
type Warning struct {
	Node, Stage, Msg string
}

// Warnings returns the stages' warnings, by node id. Metrics that came
// through a plugin hold them as []any, those of a stage in process as
// []string.
func (s *Summary) Warnings() []Warning {
	var out []Warning
	for _, id := range s.NodeIDs() {
		n := s.Nodes[id]
		switch w := n.Metrics["warnings"].(type) {
		case []string:
			for _, m := range w {
				out = append(out, Warning{id, n.Stage, m})
			}
		case []any:
			for _, m := range w {
				out = append(out, Warning{id, n.Stage, fmt.Sprint(m)})
			}
		}
	}
	return out
}
