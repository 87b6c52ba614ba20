package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mailgate/mailgate/accounting"
	"github.com/mailgate/mailgate/cluster"
)

// cmdCluster: mailgate cluster import -config FILE.
func cmdCluster(args []string) error {
	if len(args) == 0 || args[0] != "import" {
		fmt.Fprint(os.Stderr, `usage: mailgate cluster import -config FILE

  import   copy this node's state file (policy, lockouts, last logins, IP
           history) into the Redis of the config's cluster block. Entries
           already in Redis are merged, newer wins: running it twice is
           harmless. Stop mailgate first (the state file has one writer).
`)
		return errors.New("cluster: unknown or missing subcommand")
	}
	cfg, _, err := loadConfigFlag("cluster import", args[1:])
	if err != nil {
		return err
	}
	if cfg.Cluster == nil {
		return errors.New("cluster import: the config has no cluster block")
	}
	if cfg.State == "" {
		return errors.New("cluster import: the config has no state file to import")
	}
	st, err := accounting.OpenStore(cfg.State, cfg.HistoryPerUser)
	if err != nil {
		return fmt.Errorf("cluster import: %w", err)
	}
	defer st.Close()
	reg, err := accounting.Open(accounting.Options{Store: st, HistoryPerUser: cfg.HistoryPerUser})
	if err != nil {
		return fmt.Errorf("cluster import: state %s: %w", cfg.State, err)
	}
	r, err := redisOptions(cfg.Cluster)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := cluster.Import(ctx, r, cfg.Cluster.Prefix, reg)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(res)
	fmt.Println(string(b))
	return nil
}
