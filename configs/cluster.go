package configs

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/mailgate/mailgate/cluster"
)

// Cluster joins several nodes into one through Redis (nil: a single node,
// its state in the bbolt file). See docs/architecture.md §9.
type Cluster struct {
	Redis ClusterRedis `yaml:"redis"`
	// Prefix starts every Redis key and channel (default "mailgate:").
	Prefix string `yaml:"prefix"`
	// Heartbeat is how often the node says it lives (default 2s).
	Heartbeat Duration `yaml:"heartbeat"`
	// NodeTTL: a node silent this long is gone (default 10s).
	NodeTTL Duration `yaml:"node_ttl"`
	// OnRedisDown: last-known (default) keeps logins going with the last
	// policy known; refuse answers them with a temporary failure.
	OnRedisDown string `yaml:"on_redis_down"`
}

// ClusterRedis says how to reach Redis: one address, several (Redis
// Cluster), or Sentinels with master_name.
type ClusterRedis struct {
	Addresses    []string        `yaml:"addresses"`
	MasterName   string          `yaml:"master_name"`
	Username     string          `yaml:"username"`
	PasswordFile string          `yaml:"password_file"`
	DB           int             `yaml:"db"`
	TLS          ClusterRedisTLS `yaml:"tls"`
}

// ClusterRedisTLS is TLS toward Redis.
type ClusterRedisTLS struct {
	Enabled    bool   `yaml:"enabled"`
	CAFile     string `yaml:"ca_file"`
	ServerName string `yaml:"server_name"`
}

func (c *Cluster) setDefaults() {
	if c.Prefix == "" {
		c.Prefix = cluster.DefaultPrefix
	}
	if c.Heartbeat == 0 {
		c.Heartbeat = Duration(cluster.DefaultHeartbeat)
	}
	if c.NodeTTL == 0 {
		c.NodeTTL = Duration(cluster.DefaultNodeTTL)
	}
	if c.OnRedisDown == "" {
		c.OnRedisDown = cluster.OnDownLastKnown
	}
}

func (c *Cluster) validate() error {
	r := c.Redis
	if len(r.Addresses) == 0 {
		return errors.New("cluster.redis.addresses: at least one host:port is required")
	}
	for _, a := range r.Addresses {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return fmt.Errorf("cluster.redis.addresses: %q is not host:port", a)
		}
	}
	if r.DB < 0 || r.DB > 15 {
		return fmt.Errorf("cluster.redis.db: %d is not 0..15", r.DB)
	}
	if r.DB != 0 && len(r.Addresses) > 1 && r.MasterName == "" {
		return errors.New("cluster.redis.db: a Redis Cluster (several addresses) has only db 0")
	}
	if r.PasswordFile != "" {
		if _, err := os.Stat(r.PasswordFile); err != nil {
			return fmt.Errorf("cluster.redis.password_file: %v", err)
		}
	}
	if r.TLS.CAFile != "" {
		if !r.TLS.Enabled {
			return errors.New("cluster.redis.tls.ca_file: set tls.enabled too")
		}
		if _, err := os.Stat(r.TLS.CAFile); err != nil {
			return fmt.Errorf("cluster.redis.tls.ca_file: %v", err)
		}
	}
	if strings.ContainsAny(c.Prefix, " {}") {
		return fmt.Errorf("cluster.prefix: %q may not contain spaces or braces", c.Prefix)
	}
	if c.Heartbeat.D() < 100*time.Millisecond {
		return errors.New("cluster.heartbeat: at least 100ms")
	}
	if c.NodeTTL.D() < 2*c.Heartbeat.D() {
		return fmt.Errorf("cluster.node_ttl: %v is less than two heartbeats (%v)", c.NodeTTL.D(), 2*c.Heartbeat.D())
	}
	if err := oneOf(c.OnRedisDown, cluster.OnDownLastKnown, cluster.OnDownRefuse); err != nil {
		return fmt.Errorf("cluster.on_redis_down: %w", err)
	}
	return nil
}

// Password reads the Redis password file ("" when none is set).
func (r ClusterRedis) Password() (string, error) {
	if r.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(r.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("cluster.redis.password_file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}
