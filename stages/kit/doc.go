// Package kit holds what the stages and the host share. Its sub-packages:
// ort (the ONNX Runtime library and sessions).
package kit
