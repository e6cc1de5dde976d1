package knn_test

import (
	"fmt"

	"github.com/tcore-dev/tcore/stages/kit/knn"
)

// Label agreement among nearest neighbours, with the Go engine.
func ExampleNeighbors() {
	// Six points in two clusters; the last point of the first cluster
	// carries the other cluster's label.
	x := []float32{0, 1, 0.1, 1, 0.2, 1, 1, 0, 1, 0.1, 1, 0.2}
	labels := []int32{0, 0, 1, 1, 1, 1}
	const n, d, k = 6, 2, 2
	nb, err := knn.Neighbors(knn.Standardize(x, n, d), n, d, k, knn.Options{Engine: knn.EngineGo})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(knn.Agreement(nb, labels, k))
	// Output: [0.5 0.5 0 1 1 1]
}
