package bootstrap_test

import (
	"fmt"

	"github.com/tcore-dev/tcore/stages/bootstrap"
	"github.com/tcore-dev/tcore/stages/kit/chanfilter"
)

// A move gate's class part takes the one class where most of its probe
// rows land; a class gate (a blurred encoder's) takes every class with 5%
// of them, widened by the rows' neighbourhood.
func ExampleParams_ClassRule() {
	var p bootstrap.Params
	p.ClassPartShare, p.ClassPartClasses, p.GateNeighbours = 0.15, 1, 10
	probe := [][]float32{{3}, {3}, {3}, {3}, {9}, {9}, {9}, {1}}
	predict := func(e []float32) int { return int(e[0]) }

	part := &chanfilter.Gate{Probe: probe, Both: true}
	fmt.Printf("%+v\n", p.ClassRule(part))
	if _, err := bootstrap.ClassGate(part, predict, nil, nil, p.ClassRule(part)); err != nil {
		fmt.Println(err)
	}
	fmt.Println("class part:", part.Classes)

	class := &chanfilter.Gate{Probe: probe}
	fmt.Printf("%+v\n", p.ClassRule(class))
	// Output:
	// {Share:0.15 Most:1 Neighbours:0}
	// class part: [3]
	// {Share:0.05 Most:0 Neighbours:10}
}
