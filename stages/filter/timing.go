package filter

import (
	"time"

	"github.com/tcore-dev/tcore/plugin"
)

// Step is how long one step of a filter run took. The report lists the
// steps in the order they ran, so that a slow run shows where its time
// went.
type Step struct {
	Step    string  `json:"step"`
	Seconds float64 `json:"seconds"`
}

// clock times the steps of a run: each call of step ends the one before.
type clock struct {
	progress plugin.Progress
	steps    []Step
	name     string
	start    time.Time
}

func newClock(progress plugin.Progress, first string) *clock {
	return &clock{progress: progress, name: first, start: time.Now()}
}

// step ends the current step and starts one called name; say, when not
// empty, goes to the progress stream (the steps after the scan can take
// minutes: the user sees which one runs).
func (c *clock) step(name, say string) {
	c.end()
	c.name, c.start = name, time.Now()
	if say != "" {
		c.say(say)
	}
}

// say reports msg on the progress stream without starting a step (the
// smooth step's blurs).
func (c *clock) say(msg string) {
	if c.progress != nil {
		c.progress.Report(plugin.Event{Message: msg})
	}
}

func (c *clock) end() {
	if c.name != "" {
		c.steps = append(c.steps, Step{Step: c.name, Seconds: time.Since(c.start).Seconds()})
		c.name = ""
	}
}

// done ends the current step and returns every step's time.
func (c *clock) done() []Step {
	c.end()
	return c.steps
}
