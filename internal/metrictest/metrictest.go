// Package metrictest reads metrics in tests through
// prometheus/testutil: a registry's families are rendered in the text
// exposition format by testutil.GatherAndFormat, and a series is picked
// from that text by name and labels, as a person reads /metrics. No test
// walks client_model structs by hand.
package metrictest

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Series is one line of the text exposition: the series' name, its label
// block as exposed (`client="c1",result="success"`, "" without labels)
// and its value.
type Series struct {
	Name   string
	Labels string
	Value  float64
}

// Has says whether the series has label name with value.
func (s Series) Has(name, value string) bool {
	return strings.Contains(","+s.Labels+",", ","+name+"="+strconv.Quote(value)+",")
}

// Gather returns every series of the named families (all families if none
// is named), histogram and summary series (_bucket, _sum, _count)
// included, in exposition order.
func Gather(t testing.TB, g prometheus.Gatherer, families ...string) []Series {
	t.Helper()
	if len(families) == 0 { // GatherAndFormat renders only the families named
		mfs, err := g.Gather()
		if err != nil {
			t.Fatalf("gathering metrics: %v", err)
		}
		for _, mf := range mfs {
			families = append(families, mf.GetName())
		}
	}
	text, err := testutil.GatherAndFormat(g, expfmt.TypeTextPlain, families...)
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var out []Series
	for _, line := range strings.Split(string(text), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("exposition line without a value: %q", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		s := Series{Name: line[:i], Value: v}
		if name, labels, ok := strings.Cut(s.Name, "{"); ok {
			s.Name, s.Labels = name, strings.TrimSuffix(labels, "}")
		}
		out = append(out, s)
	}
	return out
}

// Value is the value of the first series called name (a family's name, or
// a histogram's name_count, name_sum) that has every label of labels, given
// as name, value pairs; 0 if there is none, as Prometheus reads a counter
// not yet created.
func Value(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	v, _ := Lookup(t, g, name, labels...)
	return v
}

// Lookup is Value, and whether there is such a series.
func Lookup(t testing.TB, g prometheus.Gatherer, name string, labels ...string) (float64, bool) {
	t.Helper()
	if len(labels)%2 != 0 {
		t.Fatalf("metrictest: labels %q of %s are not name, value pairs", labels, name)
	}
	family := name
	for _, suffix := range []string{"_count", "_sum", "_bucket"} {
		family = strings.TrimSuffix(family, suffix)
	}
series:
	for _, s := range Gather(t, g, family, name) {
		if s.Name != name {
			continue
		}
		for i := 0; i < len(labels); i += 2 {
			if !s.Has(labels[i], labels[i+1]) {
				continue series
			}
		}
		return s.Value, true
	}
	return 0, false
}

// Parse reads a /metrics body in the text exposition format (what a real
// daemon serves) with expfmt, as a Gatherer for Gather, Value and Lookup, or
// for testutil itself.
func Parse(t testing.TB, body string) prometheus.Gatherer {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	byName, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	mfs := make([]*dto.MetricFamily, 0, len(byName))
	for _, mf := range byName {
		mfs = append(mfs, mf)
	}
	sort.Slice(mfs, func(i, j int) bool { return mfs[i].GetName() < mfs[j].GetName() })
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) { return mfs, nil })
}
