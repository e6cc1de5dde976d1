package plugin

import (
	"encoding/json"

	"github.com/tcore-dev/tcore/arrowio"
	"github.com/tcore-dev/tcore/plugin/proto/stagepb"
)

func specToProto(s Spec) *stagepb.StageSpec {
	ports := func(ps []PortSpec) []*stagepb.PortSpec {
		out := make([]*stagepb.PortSpec, len(ps))
		for i, p := range ps {
			out[i] = &stagepb.PortSpec{Name: p.Name, Kind: string(p.Kind), Optional: p.Optional, Doc: p.Doc}
		}
		return out
	}
	params := make([]*stagepb.ParamSpec, len(s.Params))
	for i, p := range s.Params {
		params[i] = &stagepb.ParamSpec{Name: p.Name, DefaultJson: string(p.Default), Doc: p.Doc,
			Role: string(p.Role), Type: p.Type, Range: p.Range, Enum: p.Enum}
	}
	return &stagepb.StageSpec{Name: s.Name, Version: s.Version, Inputs: ports(s.Inputs),
		Outputs: ports(s.Outputs), Params: params, NeedsAllRows: s.NeedsAllRows}
}

func specFromProto(p *stagepb.StageSpec) Spec {
	ports := func(ps []*stagepb.PortSpec) []PortSpec {
		out := make([]PortSpec, len(ps))
		for i, p := range ps {
			out[i] = PortSpec{Name: p.Name, Kind: arrowio.Kind(p.Kind), Optional: p.Optional, Doc: p.Doc}
		}
		return out
	}
	params := make([]ParamSpec, len(p.Params))
	for i, q := range p.Params {
		params[i] = ParamSpec{Name: q.Name, Default: json.RawMessage(q.DefaultJson), Doc: q.Doc,
			Role: Role(q.Role), Type: q.Type, Range: q.Range, Enum: q.Enum}
	}
	return Spec{Name: p.Name, Version: p.Version, Inputs: ports(p.Inputs), Outputs: ports(p.Outputs),
		Params: params, NeedsAllRows: p.NeedsAllRows}
}

func codeToProto(c Code) stagepb.ErrorCode {
	switch c {
	case CodeBadInput:
		return stagepb.ErrorCode_ERROR_CODE_BAD_INPUT
	case CodeCancelled:
		return stagepb.ErrorCode_ERROR_CODE_CANCELLED
	}
	return stagepb.ErrorCode_ERROR_CODE_INTERNAL
}

func codeFromProto(c stagepb.ErrorCode) Code {
	switch c {
	case stagepb.ErrorCode_ERROR_CODE_BAD_INPUT:
		return CodeBadInput
	case stagepb.ErrorCode_ERROR_CODE_CANCELLED:
		return CodeCancelled
	}
	return CodeInternal
}
