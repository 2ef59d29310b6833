// Package metrictest reads metrics in tests through
// prometheus/testutil: a registry's families are rendered in the text
// exposition format by testutil.GatherAndFormat, and a series is picked
// from that text by name and labels, as a person reads /metrics. No test
// walks client_model structs by hand.
package metrictest

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
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
	if len(labels)%2 != 0 {
		t.Fatalf("metrictest.Value(%s): labels %q are not name, value pairs", name, labels)
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
		return s.Value
	}
	return 0
}
