package adminapi

import (
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/cluster"
)

// NodeList is the body of GET /api/v1/nodes.
type NodeList struct {
	Cluster bool   `json:"cluster"` // false: a single node
	Node    string `json:"node"`    // the node that answered
	RedisUp bool   `json:"redis_up"`
	// Degraded: this node cannot reach Redis; it serves with the last
	// policy it knows, its views are its own and changes are refused.
	Degraded bool   `json:"degraded"`
	Nodes    []Node `json:"nodes"`
}

// Node is one node of the cluster.
type Node struct {
	Name          string     `json:"name"`
	Admin         string     `json:"admin"`
	Version       string     `json:"version"`
	PID           int        `json:"pid"`
	Started       time.Time  `json:"started"`
	LastHeartbeat *time.Time `json:"last_heartbeat"`
	Connections   int        `json:"live_connections"`
	State         string     `json:"state"` // up, gone
	Degraded      bool       `json:"degraded"`
}

// nodeActions is what a cluster view adds: drops that say how many went on
// each node.
type nodeActions interface {
	DropUserNodes(user, protocol, reason string) (cluster.Result, error)
	DropConnNodes(id uint64, reason string) (cluster.Result, error)
	SetProtocolEnabledNodes(user, protocol string, enabled, drop bool) (cluster.Result, error)
}

var _ nodeActions = (*cluster.View)(nil)

// listNodes: GET /api/v1/nodes.
func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	c := s.cluster
	if c == nil {
		sum := 0
		if s.metrics != nil {
			sum = s.metrics.Summary()["all"]
		} else if src, ok := s.reg.(MetricsSource); ok {
			sum = src.Summary()["all"]
		}
		out := NodeList{Node: s.node, RedisUp: false, Nodes: []Node{{Name: s.node,
			Version: s.version, PID: os.Getpid(), Started: s.started.UTC(), Connections: sum, State: "up"}}}
		if s.extraNodes != nil {
			out.Nodes = append(out.Nodes, s.extraNodes()...)
		}
		writeJSON(w, http.StatusOK, out)
		return nil
	}
	out := NodeList{Cluster: true, Node: c.Name(), RedisUp: c.Up(), Degraded: !c.Up(), Nodes: []Node{}}
	for _, n := range c.Nodes() {
		out.Nodes = append(out.Nodes, Node{Name: n.Name, Admin: n.Admin, Version: n.Version, PID: n.PID,
			Started: n.Started, LastHeartbeat: wireTime(n.Heartbeat), Connections: n.Conns, State: n.State, Degraded: n.Degraded})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// addNodes puts a cluster result's per-node counts into a drop's answer.
func addNodes(d *DropResult, res cluster.Result) {
	d.Nodes, d.Missing = res.ByNode, res.Missing
}

// clusterCollector exports the cluster's numbers.
type clusterCollector struct {
	c                                          *cluster.Cluster
	up, nodes, lag, changes, dropped, lockouts *prometheus.Desc
	propagation                                prometheus.Histogram
}

func newClusterCollector(c *cluster.Cluster) *clusterCollector {
	return &clusterCollector{c: c,
		up:       prometheus.NewDesc("mailgate_cluster_redis_up", "1 when Redis answered the last heartbeat.", nil, nil),
		nodes:    prometheus.NewDesc("mailgate_cluster_nodes_up", "Cluster nodes up, this one included.", nil, nil),
		lag:      prometheus.NewDesc("mailgate_cluster_bus_lag_seconds", "Age of the last bus message when this node read it.", nil, nil),
		changes:  prometheus.NewDesc("mailgate_cluster_changes_applied_total", "Policy changes applied from the bus.", nil, nil),
		dropped:  prometheus.NewDesc("mailgate_cluster_events_dropped_total", "Login events not sent to Redis (queue full or Redis down).", nil, nil),
		lockouts: prometheus.NewDesc("mailgate_cluster_lockouts_total", "Cluster-wide lockouts decided on failures seen by this node.", nil, nil),
		propagation: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mailgate_cluster_propagation_seconds",
			Help:    "Time from a change's commit on another node to its application here.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}}),
	}
}

func (cc *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cc.up, cc.nodes, cc.lag, cc.changes, cc.dropped, cc.lockouts} {
		ch <- d
	}
	cc.propagation.Describe(ch)
}

func (cc *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := cc.c.Stats()
	up := 0.0
	if st.RedisUp {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(cc.up, prometheus.GaugeValue, up)
	ch <- prometheus.MustNewConstMetric(cc.nodes, prometheus.GaugeValue, float64(st.NodesUp))
	ch <- prometheus.MustNewConstMetric(cc.lag, prometheus.GaugeValue, st.BusLag.Seconds())
	ch <- prometheus.MustNewConstMetric(cc.changes, prometheus.CounterValue, float64(st.Changes))
	ch <- prometheus.MustNewConstMetric(cc.dropped, prometheus.CounterValue, float64(st.EventsDropped))
	ch <- prometheus.MustNewConstMetric(cc.lockouts, prometheus.CounterValue, float64(st.Lockouts))
	for _, v := range st.Propagation {
		cc.propagation.Observe(v)
	}
	cc.propagation.Collect(ch)
}
