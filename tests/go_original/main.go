// A scheduler or a worker of the Go original (worksync v0.0.3), written as its README and
// examples/ use it, for tests that race it against worksync_sa on one MariaDB table.
//
//	fleet scheduler -dsn DSN -table T -works JSON -before 5s -check "@every 1s" -for 60s
//	fleet worker    -dsn DSN -table T -works JSON -hold 20ms -for 60s
//
// -works is a JSON list of {"Name", "Cron", "MaxRun"}. Sequences are the original's
// default: the tick in the process's local zone (TZ). A worker prints one line per claim,
// "claimed<TAB>name<TAB>sequence", and every failed acquire other than "nothing left" as
// "error<TAB>name<TAB>sequence<TAB>message"; the scheduler prints the original's own
// "failed to create work" lines. Both end with "done" after -for.
package main

import (
	"database/sql"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	_ "github.com/go-sql-driver/mysql"
	"github.com/mehditeymorian/worksync"
	"github.com/robfig/cron"
)

type spec struct {
	Name   string
	Cron   string
	MaxRun int64
}

var out sync.Mutex

func say(format string, args ...any) {
	out.Lock()
	defer out.Unlock()
	fmt.Printf(format+"\n", args...)
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: fleet scheduler|worker [flags]")
		os.Exit(2)
	}
	role := os.Args[1]
	flags := flag.NewFlagSet(role, flag.ExitOnError)
	dsn := flags.String("dsn", "", "go-sql-driver/mysql DSN")
	table := flags.String("table", "workers", "the work table")
	worksJSON := flags.String("works", "[]", "JSON list of {Name, Cron, MaxRun}")
	before := flags.Duration("before", 5*time.Second, "DurationBeforeSequence")
	check := flags.String("check", "@every 1s", "SchedulerCheckingInterval")
	hold := flags.Duration("hold", 20*time.Millisecond, "how long a claimed work runs")
	runFor := flags.Duration("for", 60*time.Second, "how long to run")
	_ = flags.Parse(os.Args[2:])

	var specs []spec
	if err := json.Unmarshal([]byte(*worksJSON), &specs); err != nil {
		fmt.Fprintln(os.Stderr, "bad -works:", err)
		os.Exit(2)
	}
	db, err := sql.Open("mysql", *dsn)
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(1)
	}
	syncDB := worksync.NewDBConnection(db, *table)

	switch role {
	case "scheduler":
		works := make([]*worksync.Work, 0, len(specs))
		for _, s := range specs {
			works = append(works, &worksync.Work{Name: s.Name, Cron: s.Cron, MaxRun: s.MaxRun})
		}
		scheduler, err := worksync.NewScheduler(syncDB, works, &worksync.SchedulerConfig{
			DurationBeforeSequence:    *before,
			SchedulerCheckingInterval: *check,
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, "scheduler:", err)
			os.Exit(1)
		}
		scheduler.StartSchedule()
		say("started")
		time.Sleep(*runFor)
		scheduler.StopSchedule()
	case "worker":
		syncer := worksync.NewSyncer(syncDB)
		workers := cron.New()
		for _, s := range specs {
			name := s.Name
			err := workers.AddFunc(s.Cron, func() {
				sequence := time.Now().Format(time.DateTime)
				success, _, err := syncer.AcquireWork(name, sequence)
				if err != nil {
					if err != worksync.ErrFailToAcquireWork { // that one alone: nothing left to claim
						say("error\t%s\t%s\t%s", name, sequence, err)
					}
					return
				}
				say("claimed\t%s\t%s", name, sequence)
				time.Sleep(*hold)
				success()
			})
			if err != nil {
				fmt.Fprintln(os.Stderr, "cron:", err)
				os.Exit(1)
			}
		}
		workers.Start()
		say("started")
		time.Sleep(*runFor)
		workers.Stop()
	default:
		fmt.Fprintln(os.Stderr, "unknown role", role)
		os.Exit(2)
	}
	say("done")
}
