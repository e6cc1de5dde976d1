# tcore: `make` sets up, builds and runs the demo; `make test` runs the tests.
GO          ?= go
ORT_VERSION := 1.24.1
ORT_SHA256  := 53ef1ac028dd1b05554b8da28d9159eb3876f99868193d2aaa6e67f0243c23d4
ORT_LIB     := third_party/onnxruntime/libonnxruntime.so.1
STAGE_CMDS  := $(wildcard stages/*/cmd/tcore-*)
PLUGIN_BINS := $(patsubst stages/%,bin/%,$(notdir $(STAGE_CMDS)))
export TCORE_ORT_LIB ?= $(CURDIR)/$(ORT_LIB)

.PHONY: all setup modules ort build tcore plugins demo test race bench fuzz proto fmt vet clean

all: build demo

## setup: Go modules and the ONNX Runtime shared library (idempotent)
setup: modules ort

modules:
	$(GO) mod download

# ONNX Runtime's CPU library comes from the onnxruntime-node package: pack it
# (no install scripts run), unpack the one library file, check its sha256.
ort:
	@if [ -f $(ORT_LIB) ] && echo "$(ORT_SHA256)  $(ORT_LIB)" | sha256sum -c --status; then \
		echo "onnxruntime $(ORT_VERSION): $(ORT_LIB) present"; \
	else \
		set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
		echo "fetching onnxruntime $(ORT_VERSION) (npm pack onnxruntime-node)"; \
		(cd "$$tmp" && npm pack --silent onnxruntime-node@$(ORT_VERSION) >/dev/null); \
		tar -xzf "$$tmp/onnxruntime-node-$(ORT_VERSION).tgz" -C "$$tmp" package/bin/napi-v6/linux/x64/libonnxruntime.so.1; \
		echo "$(ORT_SHA256)  $$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" | sha256sum -c --quiet; \
		mkdir -p $(dir $(ORT_LIB)); \
		mv "$$tmp/package/bin/napi-v6/linux/x64/libonnxruntime.so.1" $(ORT_LIB).tmp && mv $(ORT_LIB).tmp $(ORT_LIB); \
		echo "onnxruntime $(ORT_VERSION): $(ORT_LIB)"; \
	fi

## build: the tcore CLI and every stage plugin, with their sha256s locked
build: setup tcore plugins

tcore:
	$(GO) build -trimpath -o bin/tcore ./host-example/cmd/tcore

plugins: tcore
	$(GO) generate ./host-example/builtin
	@for d in $(STAGE_CMDS); do \
		echo "$(GO) build -o bin/$$(basename $$d) ./$$d"; \
		$(GO) build -trimpath -o bin/$$(basename $$d) ./$$d || exit 1; \
	done
	bin/tcore plugins lock
	bin/tcore plugins verify

demo: build
	bin/tcore demo

## test: every package's tests, then the race detector over the plugin
## boundary and the host, then the exported Argo workflows against Argo's
## own schema and validator (a test-only module, host-example/argo/check)
test: build
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 30m ./...
	$(GO) test -count=1 -timeout 30m -race ./plugin/... ./host-example/...
	cd host-example/argo/check && $(GO) vet ./... && $(GO) test -count=1 ./...

## bench: the plugin boundary (features/v1 in process vs across), and the
## embed stage vs raw ONNX Runtime vs PyTorch on ../shared's CIFAR-10 test set
bench: build
	$(GO) test -run '^$$' -bench Boundary -benchtime 8x ./plugin/ | awk '{ print } \
		/^BenchmarkBoundary\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[3]); mb[n[2] "/" n[3]] = $$(NF-1) } \
		END { split("one-way round-trip", ds, " "); for (i = 1; i <= 2; i++) { d = ds[i]; \
			if (mb["in-process/" d] > 0) printf "boundary %s: plugin %.3fx, plugin-files %.3fx of in process (%s / %s / %s MB/s)\n", d, \
				mb["plugin/" d] / mb["in-process/" d], mb["plugin-files/" d] / mb["in-process/" d], mb["plugin/" d], mb["plugin-files/" d], mb["in-process/" d] } }'
	$(GO) test -run '^$$' -bench TrainingStep -benchtime 200x ./stages/kit/mlp/ | awk '{ print } \
		/^BenchmarkTrainingStep\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); ns[n[2]] = $$3 } \
		END { if (ns["one-graph"] > 0) printf "head training step: %.2fx faster as one graph (%.2f ms) than gradients then Adam in Go (%.2f ms)\n", \
			ns["grads-then-adam-in-go"] / ns["one-graph"], ns["one-graph"] / 1e6, ns["grads-then-adam-in-go"] / 1e6 }'
	$(GO) test -run '^$$' -bench FitUnevenPair -benchtime 10x ./stages/kit/mlp/ | awk '{ print } \
		/^BenchmarkFitUnevenPair\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); ns[n[2]] = $$3 } \
		END { if (ns["every-thread-alone"] > 0) printf "an uneven pair of head fits: %.2fx faster when the long one takes every thread once alone (%.0f ms) than on half of them (%.0f ms)\n", \
			ns["half-threads"] / ns["every-thread-alone"], ns["every-thread-alone"] / 1e6, ns["half-threads"] / 1e6 }'
	$(GO) test -run '^$$' -bench PaintInput -benchtime 300x ./stages/kit/encoder/ | awk '{ print } \
		/^BenchmarkPaintInput\// { split($$1, n, "/"); sub(/-[0-9]+$$/, "", n[2]); ns[n[2]] = $$3 } \
		END { if (ns["stage"] > 0) printf "a 32-px image painted for a 224-px encoder: %.2fx faster (%.0f us) than its per-pixel definition (%.0f us)\n", \
			ns["definition"] / ns["stage"], ns["stage"] / 1e3, ns["definition"] / 1e3 }'
	$(GO) build -trimpath -o bin/embed-bench ./host-example/cmd/embed-bench
	bin/embed-bench --encoder ../shared/models/enc_clean.onnx --data ../shared/datasets/cifar10/test.parquet

## fuzz: every reader's and parser's fuzz target for FUZZTIME each, one
## worker, one after the other; a crasher lands in the package's testdata/fuzz
## and the loop goes on, failing at the end. `go test` replays the corpus.
FUZZTIME    ?= 10m
FUZZ_TARGETS := $(shell grep -ho '^func Fuzz[A-Za-z0-9]*' $$(git ls-files '*_test.go') /dev/null | sed 's/func //')
fuzz: setup
	@mkdir -p runs/fuzz; fail=; for fn in $(FUZZ_TARGETS); do \
		pkg=$$(dirname $$(grep -l "^func $$fn(" $$(git ls-files '*_test.go'))); \
		echo "== $$fn ./$$pkg $(FUZZTIME) from $$(date -u +%H:%M:%S)"; \
		if $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x -parallel 1 ./$$pkg > runs/fuzz/$$fn.log 2>&1; \
		then tail -n 3 runs/fuzz/$$fn.log | grep 'execs:' | tail -n 1; else fail="$$fail $$fn"; tail -n 12 runs/fuzz/$$fn.log; fi; \
	done; if [ -n "$$fail" ]; then echo "fuzz: crashers in$$fail"; exit 1; fi

proto:
	protoc -I plugin/proto --go_out=plugin/proto/stagepb --go_opt=paths=source_relative \
		--go-grpc_out=plugin/proto/stagepb --go-grpc_opt=paths=source_relative plugin/proto/stage.proto

fmt:
	gofmt -l -w $$(git ls-files '*.go')

clean:
	rm -rf bin runs manifest.lock.json
