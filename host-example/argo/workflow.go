// Package argo exports a tcore pipeline as an Argo Workflow (or
// WorkflowTemplate): one DAG whose tasks are the pipeline's stage nodes,
// each a container running `tcore stage` with its inputs and outputs as
// artifacts. It writes YAML and schedules nothing: Argo (or Kubeflow
// Pipelines, which compiles to it) runs the steps.
package argo

// The types below are the part of Argo's argoproj.io/v1alpha1 Workflow
// that an export writes, with Argo's field names; the tests check what
// they produce against Argo's own schema and validator.

// Workflow is an Argo Workflow or WorkflowTemplate.
type Workflow struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Metadata   Metadata `json:"metadata"`
	Spec       Spec     `json:"spec"`
}

// Metadata names the object.
type Metadata struct {
	Name         string            `json:"name,omitempty"`
	GenerateName string            `json:"generateName,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Spec is a workflow's spec.
type Spec struct {
	Entrypoint string     `json:"entrypoint"`
	Arguments  *Arguments `json:"arguments,omitempty"`
	Templates  []Template `json:"templates"`
}

// Arguments are parameters and artifacts handed to a workflow or task.
type Arguments struct {
	Parameters []Parameter `json:"parameters,omitempty"`
	Artifacts  []Artifact  `json:"artifacts,omitempty"`
}

// Parameter is a named string value.
type Parameter struct {
	Name  string `json:"name"`
	Value string `json:"value,omitempty"`
}

// Artifact is a file handed between steps.
type Artifact struct {
	Name     string        `json:"name"`
	Path     string        `json:"path,omitempty"`
	From     string        `json:"from,omitempty"`
	Optional bool          `json:"optional,omitempty"`
	S3       *S3Artifact   `json:"s3,omitempty"`
	HTTP     *HTTPArtifact `json:"http,omitempty"`
	Archive  *Archive      `json:"archive,omitempty"`
}

// S3Artifact is an artifact in the cluster's default artifact repository,
// by key (Argo's key-only artifacts).
type S3Artifact struct {
	Key string `json:"key"`
}

// HTTPArtifact is an artifact fetched from a URL.
type HTTPArtifact struct {
	URL string `json:"url"`
}

// Archive says how an output is stored; None keeps the file as it is.
type Archive struct {
	None *struct{} `json:"none,omitempty"`
}

// Template is a DAG or a container step.
type Template struct {
	Name          string            `json:"name"`
	Inputs        *IO               `json:"inputs,omitempty"`
	Outputs       *IO               `json:"outputs,omitempty"`
	DAG           *DAG              `json:"dag,omitempty"`
	Container     *Container        `json:"container,omitempty"`
	NodeSelector  map[string]string `json:"nodeSelector,omitempty"`
	Tolerations   []Toleration      `json:"tolerations,omitempty"`
	RetryStrategy *RetryStrategy    `json:"retryStrategy,omitempty"`
}

// IO lists a template's inputs or outputs.
type IO struct {
	Parameters []Parameter `json:"parameters,omitempty"`
	Artifacts  []Artifact  `json:"artifacts,omitempty"`
}

// DAG is a template's tasks.
type DAG struct {
	Tasks []Task `json:"tasks"`
}

// Task is one node of a DAG.
type Task struct {
	Name         string     `json:"name"`
	Template     string     `json:"template"`
	Dependencies []string   `json:"dependencies,omitempty"`
	Arguments    *Arguments `json:"arguments,omitempty"`
}

// Container is the step's container.
type Container struct {
	Image     string     `json:"image"`
	Command   []string   `json:"command"`
	Args      []string   `json:"args,omitempty"`
	Resources *Resources `json:"resources,omitempty"`
}

// Resources are the container's resource requests and limits.
type Resources struct {
	Requests map[string]string `json:"requests,omitempty"`
	Limits   map[string]string `json:"limits,omitempty"`
}

// Toleration lets a step run on tainted nodes (GPU nodes often are).
type Toleration struct {
	Key      string `json:"key,omitempty"`
	Operator string `json:"operator,omitempty"`
	Value    string `json:"value,omitempty"`
	Effect   string `json:"effect,omitempty"`
}

// RetryStrategy retries a step; RetryPolicy OnError retries when the node
// fails (a lost or evicted pod), not when tcore exits with an error.
type RetryStrategy struct {
	Limit       int    `json:"limit"`
	RetryPolicy string `json:"retryPolicy,omitempty"`
}
