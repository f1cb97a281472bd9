// Command kube-controller-manager is the upstream kube-controller-manager, built from the Kubernetes Go modules for the
// kposture local environment (DESIGN.md section 5). It mirrors k8s.io/kubernetes/cmd/kube-controller-manager.
package main

import (
	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format, as upstream
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics, as upstream
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric, as upstream
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
	"os"
	_ "time/tzdata" // CronJob time zones, as upstream
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
