package metrics

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
)

// dashboard is the Grafana dashboard shipped in dist/.
const dashboard = "../../dist/grafana-dashboard.json"

var metricName = regexp.MustCompile(`\bportcullis_[a-z0-9_]+`)

// queries returns every "expr" and "query" string of a dashboard.
func queries(v any) []string {
	var out []string
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if s, ok := x.(string); ok && (k == "expr" || k == "query") {
				out = append(out, s)
			} else {
				out = append(out, queries(x)...)
			}
		}
	case []any:
		for _, x := range v {
			out = append(out, queries(x)...)
		}
	}
	return out
}

// TestDashboardUsesOnlyTheseMetrics: every metric the dashboard queries
// exists (a histogram by its _bucket, _sum or _count series), and every
// portcullis metric is on the dashboard, so that neither drifts from the
// other.
func TestDashboardUsesOnlyTheseMetrics(t *testing.T) {
	data, err := os.ReadFile(dashboard)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(data, &d); err != nil {
		t.Fatalf("%s: %v", dashboard, err)
	}
	m := New(nil)
	populate(m)
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	types := map[string]dto.MetricType{}
	for _, mf := range mfs {
		if strings.HasPrefix(mf.GetName(), Prefix) {
			types[mf.GetName()] = mf.GetType()
		}
	}
	used := map[string]bool{}
	qs := queries(d)
	if len(qs) < 10 {
		t.Fatalf("%s has %d queries", dashboard, len(qs))
	}
	for _, q := range qs {
		for _, name := range metricName.FindAllString(q, -1) {
			if _, ok := types[name]; ok {
				used[name] = true
				continue
			}
			base := name
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if types[base] == dto.MetricType_HISTOGRAM && base != name {
				used[base] = true
				continue
			}
			t.Errorf("the dashboard queries %s, which portcullis does not export: %s", name, q)
		}
	}
	for name := range types {
		if !used[name] {
			t.Errorf("%s is not on the dashboard", name)
		}
	}
}
