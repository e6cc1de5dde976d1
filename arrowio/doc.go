// Package arrowio defines tcore's table kinds and moves them in and out of
// files.
//
// # Overview
//
// Every table that flows between tcore stages is an Arrow schema whose
// metadata key "tcore.schema" names its kind and version (see [Kind]). The
// per-sample kinds carry a unique uint64 sample_id; rows are joined by id,
// never by position.
//
//	images/v1    sample_id, label (int32), image (binary: PNG or JPEG bytes)
//	features/v1  sample_id, label, embedding (fixed-size list<float32>[D]),
//	             optional layer.<name> (fixed-size list<float32>[channels])
//	scores/v1    sample_id, <stage>.<column> (float32, int32 or bool)
//	channels/v1  layer, channel, keep, score, signal
//	truth/v1     sample_id, is_poison, orig_label
//
// The package builds these schemas ([ImagesSchema], [FeaturesSchema], ...),
// checks them ([ValidateSchema]) and their rows ([Validator]), reads datasets
// (Parquet, Arrow IPC, image folders: [OpenDataset]), decodes PNG and JPEG
// images to float32 CHW tensors ([DecodeImage], [ToCHW]) and writes Parquet
// and Arrow IPC files atomically ([WriteIPCFile], [WriteParquet]).
//
// # Errors
//
// Problems in the data are returned as *[DataError], which names the file,
// column and row and wraps [ErrInvalid]. Programmer mistakes (a nil schema,
// a negative dimension) panic with an "arrowio:" prefix.
//
// # Memory
//
// Readers returned by this package must be Released by the caller; a record
// obtained from a reader's Record method is valid until the next call to
// Next and must be Retained to be kept longer.
package arrowio
