// Package check holds tests only: they validate what `tcore export argo`
// writes with Argo Workflows' own published JSON schema and its own
// validator (workflow/validate). It is a module of its own so that Argo's
// dependencies (Kubernetes' client libraries) stay out of tcore's.
package check
