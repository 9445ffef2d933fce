package ctl

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/portcullis/portcullis/internal/admin"
)

// table writes rows (cells separated by tabs) aligned in columns.
func table(rows []string) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintln(tw, r)
	}
	tw.Flush()
	return b.String()
}

// serversTable is the servers of every backend, one line each.
func serversTable(bs []admin.Backend) string {
	rows := []string{"SERVER\tSTATE\tWEIGHT\tIN FLIGHT\tREQUESTS\tFAILURES\tP50\tP99\tOVERRIDE\tLAST CHECK ERROR"}
	for _, b := range bs {
		for _, s := range b.Servers {
			rows = append(rows, strings.Join([]string{
				b.Name + "/" + s.Address, state(s), weight(s),
				fmt.Sprint(s.InFlight), count(s.Requests), count(s.Failures),
				seconds(s.Latency.P50), seconds(s.Latency.P99),
				override(s.Override), orDash(oneLine(s.LastError)),
			}, "\t"))
		}
	}
	if len(rows) == 1 {
		return "no backends\n"
	}
	return table(rows)
}

// serverLine is one server after a change.
func serverLine(backend string, s admin.Server) string {
	o := override(s.Override)
	if o == "-" {
		o = "none"
	}
	return fmt.Sprintf("%s/%s: %s, weight %s, %d in flight, override: %s", backend, s.Address, state(s), weight(s), s.InFlight, o)
}

// statusText is the process's status, one "key value" line each.
func statusText(st admin.Status) string {
	path := st.Config.Path
	if path == "" {
		path = "(the embedded quickstart)"
	}
	r := st.Reloads
	reloads := fmt.Sprintf("%d (%d failed)", r.Total, r.Failed)
	if r.LastSuccess != "" {
		reloads += ", last success " + r.LastSuccess
	}
	if r.LastError != "" {
		reloads += ", last error: " + oneLine(r.LastError)
	}
	rows := []string{
		"version\t" + st.Version,
		fmt.Sprintf("pid\t%d", st.PID),
		fmt.Sprintf("generation\t%d", st.Generation),
		"started\t" + st.Started.Format(time.RFC3339),
		"config\t" + path,
		"digest\t" + orDash(st.Config.Digest),
		"reloads\t" + reloads,
		"writable\t" + map[bool]string{true: "yes", false: "no (reads only)"}[st.Writable],
	}
	if len(st.Overrides) == 0 {
		rows = append(rows, "overrides\tnone")
	}
	for i, o := range st.Overrides {
		key := ""
		if i == 0 {
			key = "overrides"
		}
		rows = append(rows, key+"\t"+o.Backend+"/"+o.Server+": "+override(&admin.Change{State: o.State, Weight: o.Weight}))
	}
	return table(rows)
}

// state is a server's state, with its health when an administrative
// state hides it: "up", "down", "drain", "drain (down)".
func state(s admin.Server) string {
	if s.State != "up" && s.State != "down" && !s.Healthy {
		return s.State + " (down)"
	}
	return s.State
}

// weight is a server's weight, with the configured one when an override
// changed it: "5 (configured 1)".
func weight(s admin.Server) string {
	if s.Override != nil && s.Override.Weight != 0 && s.Weight != s.ConfiguredWeight {
		return fmt.Sprintf("%d (configured %d)", s.Weight, s.ConfiguredWeight)
	}
	return fmt.Sprint(s.Weight)
}

// override is what an override sets: "drain", "weight 5", "drain,
// weight 5", or "-" for none.
func override(o *admin.Change) string {
	if o == nil {
		return "-"
	}
	var parts []string
	if o.State != "" {
		parts = append(parts, o.State)
	}
	if o.Weight != 0 {
		parts = append(parts, fmt.Sprintf("weight %d", o.Weight))
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// count prints a counter, which the API sends as a float.
func count(v float64) string { return fmt.Sprintf("%.0f", v) }

// seconds prints a latency in seconds with three significant digits
// ("1.23ms"), or "-" without a sample.
func seconds(v float64) string {
	if v <= 0 {
		return "-"
	}
	d := time.Duration(v * float64(time.Second))
	u := time.Duration(1)
	for d >= 1000*u {
		u *= 10
	}
	return d.Round(u).String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// oneLine keeps a message on one line of a table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
