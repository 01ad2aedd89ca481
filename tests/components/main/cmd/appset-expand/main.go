// Command appset-expand expands an Argo CD ApplicationSet with list generators into the
// Applications its controller would create, for cmesh's GitOps tests: it reads the
// ApplicationSet as JSON on stdin and writes a JSON array of Applications.
//
// It follows Argo CD's applicationset/utils Render: with goTemplate, every string of the
// template (map keys included) is parsed and executed as a Go text/template with the
// goTemplateOptions set and the generator element as data; the Applications go into the
// ApplicationSet's namespace. Argo CD adds the sprig functions, which cmesh's templates do not
// use, so they are left out to keep this tool on the standard library; a template that uses
// one fails here rather than expanding wrongly.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"text/template"
)

type appSet struct {
	Metadata struct {
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		GoTemplate        bool     `json:"goTemplate"`
		GoTemplateOptions []string `json:"goTemplateOptions"`
		Generators        []struct {
			List *struct {
				Elements []map[string]any `json:"elements"`
			} `json:"list"`
		} `json:"generators"`
		Template map[string]any `json:"template"`
	} `json:"spec"`
}

func replace(s string, params map[string]any, options []string) (string, error) {
	t, err := template.New("").Parse(s)
	if err != nil {
		return "", err
	}
	for _, o := range options {
		t = t.Option(o)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, params); err != nil {
		return "", err
	}
	return b.String(), nil
}

func walk(v any, params map[string]any, options []string) (any, error) {
	switch x := v.(type) {
	case string:
		return replace(x, params, options)
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			r, err := walk(e, params, options)
			if err != nil {
				return nil, err
			}
			out[i] = r
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			r, err := walk(e, params, options)
			if err != nil {
				return nil, err
			}
			key, err := replace(k, params, options)
			if err != nil {
				return nil, err
			}
			out[key] = r
		}
		return out, nil
	default:
		return v, nil
	}
}

func run() error {
	var set appSet
	if err := json.NewDecoder(os.Stdin).Decode(&set); err != nil {
		return err
	}
	if !set.Spec.GoTemplate {
		return fmt.Errorf("only goTemplate ApplicationSets are supported")
	}
	apps := []any{}
	for i, g := range set.Spec.Generators {
		if g.List == nil {
			return fmt.Errorf("generator %d: only list generators are supported", i)
		}
		for j, e := range g.List.Elements {
			r, err := walk(set.Spec.Template, e, set.Spec.GoTemplateOptions)
			if err != nil {
				return fmt.Errorf("generator %d element %d: %w", i, j, err)
			}
			app := r.(map[string]any)
			meta, _ := app["metadata"].(map[string]any)
			if meta == nil {
				meta = map[string]any{}
			}
			meta["namespace"] = set.Metadata.Namespace
			apps = append(apps, map[string]any{
				"apiVersion": "argoproj.io/v1alpha1",
				"kind":       "Application",
				"metadata":   meta,
				"spec":       app["spec"],
			})
		}
	}
	out := json.NewEncoder(os.Stdout)
	out.SetIndent("", "  ")
	return out.Encode(apps)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "appset-expand:", err)
		os.Exit(1)
	}
}
